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
