"""The tiny digits training config the loop and launcher tests share: 8 steps of 16,
data parallel over 2 of the 8 test devices."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).parents[1]


def config(data_dir, **changes):
  """configs/digits.py at a quarter of a quarter width, 8 steps, evaluated every 4.

  On 2 devices: still sharded, and a fifth faster than on all 8 on a 2-core CPU (whose
  8 devices share the cores). Tests of the mesh itself set num_devices.
  """
  spec = importlib.util.spec_from_file_location("digits", ROOT / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  result = module.get_config()
  result.data_dir = data_dir
  result.model.overrides.widths = (4, 4, 8, 8, 8, 8, 8, 8)
  result.batch_size = 16
  result.num_steps = 8
  result.num_devices = 2
  result.log_every = 2
  result.eval_every = 4
  result.checkpoint_every = 4
  result.num_explanations = 2
  result.update(changes)
  return result
