"""Reference files of the official implementations, and their weight recipe.

The files in tests/golden/ are copies of ../shared/golden/ (see its README):
reference outputs of the official PyTorch code in float64.
"""

import json
import math
import pathlib

import numpy as np

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"


def load(name: str) -> dict[str, np.ndarray]:
  with np.load(GOLDEN_DIR / name) as data:
    return {k: data[k] for k in data.files}


def official_state_dict(golden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Regenerates the official model's weights from a model file's manifest and seed."""
  rng = np.random.default_rng(int(golden["seed"]))
  state = {}
  for key, shape, _ in json.loads(str(golden["manifest"])):
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
      state[key] = np.zeros(shape, np.int64)
      continue
    if key.endswith("running_var"):
      value = rng.uniform(0.5, 2.0, shape)
    elif key.endswith("running_mean"):
      value = rng.normal(0.0, 0.1, shape)
    elif len(shape) <= 1 or key.endswith("layer_scale"):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    state[key] = value.astype(np.float32)
  for name, value in golden.items():
    if name.startswith("override/"):
      state[name.removeprefix("override/")] = value
  return state


def assert_close(actual, reference, rtol: float = 1e-4, name: str = "") -> None:
  """The golden contract: max|a - r| <= rtol * max|r|."""
  actual = np.asarray(actual, np.float64)
  reference = np.asarray(reference, np.float64)
  assert actual.shape == reference.shape, f"{name}: shape {actual.shape} != {reference.shape}"
  err = np.abs(actual - reference).max()
  bound = rtol * np.abs(reference).max()
  assert err <= bound, f"{name}: max|a-r| = {err:.3g} > {bound:.3g}"
