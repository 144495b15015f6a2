"""The localisation metric end to end on a test set whose classes a model recognises."""

import json

import chex
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bcos_jax import data
from bcos_jax.evaluate import attribution, pointing_game

NUM_CLASSES, SIZE = 6, 8


class ColourClassifier(nnx.Module):
  """Class c is an image of grey level 40·c; logits peak at the matching level."""

  def __call__(self, x6, *, explain=False):
    del explain
    level = x6[..., 0].mean(axis=(1, 2))[:, None]
    centres = jnp.arange(NUM_CLASSES) * 40 / 255
    return 5.0 - 1e4 * (level - centres) ** 2


def _source():
  records = [{"image": np.full((SIZE, SIZE, 3), 40 * (i % NUM_CLASSES), np.uint8),
              "label": i % NUM_CLASSES} for i in range(60)]
  return data.Source(records, NUM_CLASSES, "colours", "test")


def _tile_oracle(model, x6, targets):
  """Attribution 1 exactly on the tile of each target (tiles are column-major)."""
  del model
  side = 2
  maps = np.zeros((*np.shape(targets), x6.shape[1], x6.shape[2], 1), np.float32)
  for k in range(np.shape(targets)[1]):
    col, row = divmod(k, side)
    maps[:, k, row * SIZE:(row + 1) * SIZE, col * SIZE:(col + 1) * SIZE] = 1
  return jnp.asarray(maps)


def _uniform(model, x6, targets):
  del model
  return jnp.ones((*np.shape(targets), x6.shape[1], x6.shape[2], 1))


def test_oracle_scores_one_uniform_one_over_n_and_results_are_written(tmp_path):
  identity = lambda record: record  # noqa: E731  (images are already final)
  setting = pointing_game.Setting(n_imgs=4, count=5, smooth=1)
  methods = {"oracle": _tile_oracle, "uniform": _uniform, "gradient":
             attribution.gradient}
  scores = pointing_game.run(ColourClassifier(), _source(), identity, identity, methods, setting)
  chex.assert_shape(scores["oracle"], (20,))
  np.testing.assert_allclose(scores["oracle"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(scores["uniform"], 0.25, rtol=1e-6)
  assert np.all(np.isfinite(scores["gradient"]))
  stem = pointing_game.write_results(tmp_path, scores, setting)
  summary = json.loads(stem.with_suffix(".json").read_text())
  assert summary["scores"]["oracle"]["median"] == 1.0
  assert stem.with_suffix(".png").stat().st_size > 0
  assert set(np.load(stem.with_suffix(".npz")).files) == set(scores)


def test_all_names_every_method():
  assert list(pointing_game.methods_by_name(["all"])) == list(attribution.METHODS)


def test_command_on_a_trained_run(tmp_path):
  """python -m bcos_jax.evaluate on a (briefly) trained digits run writes its results."""
  import importlib.util
  import os
  import pathlib
  import subprocess
  import sys

  from bcos_jax.train import loop

  root = pathlib.Path(__file__).parents[2]
  spec = importlib.util.spec_from_file_location("digits", root / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data_dir = str(tmp_path / "tfds")
  config.num_steps, config.batch_size = 80, 32
  config.optimizer.schedule, config.optimizer.learning_rate = "constant", 3e-3
  config.optimizer.warmup_epochs = 0
  config.eval_every = config.checkpoint_every = 80
  config.num_explanations, config.progress_bar = 0, False
  workdir = tmp_path / "run"
  loop.train_and_evaluate(config, workdir)
  env = {**os.environ, "XLA_FLAGS": ""}
  result = subprocess.run(
      [sys.executable, "-m", "bcos_jax.evaluate", f"--workdir={workdir}", "--grid=2",
       "--grids=1", "--smooth=1", "--conf_thresh=0", "--methods=bcos,grad_cam",
       f"--out={tmp_path / 'out'}"], cwd=root, env=env, capture_output=True, text=True,
      timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "out" / "1_2x2_noconfthresh_smooth1.json").read_text())
  assert set(summary["scores"]) == {"bcos", "grad_cam"}
  usage = subprocess.run([sys.executable, "-m", "bcos_jax.evaluate"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
  assert usage.returncode != 0 and "exactly one of --workdir" in usage.stderr
