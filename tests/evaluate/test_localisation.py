"""The localisation metric: golden parity with the official code, and its reference levels."""

import pathlib

import chex
import numpy as np
import pytest

from bcos_jax.data import recipes
from bcos_jax.evaluate import localisation

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"


@pytest.fixture(params=["localisation_3x3_smooth3", "localisation_2x2_smooth1"])
def golden(request):
  return dict(np.load(GOLDEN / f"{request.param}.npz"))


def test_grid_order_matches_the_official_code(golden):
  indices = localisation.sample_grid_indices(golden["labels"], golden["logits"],
                                             golden["correct"], int(golden["n_imgs"]),
                                             float(golden["conf_thresh"]))
  np.testing.assert_array_equal(indices, golden["sorted_indices"])


def test_grids_and_targets_match_the_official_code(golden):
  images_nhwc = golden["images"].transpose(0, 2, 3, 1)
  grids, targets = localisation.make_grids(images_nhwc, golden["labels"],
                                           golden["sorted_indices"], int(golden["n_imgs"]),
                                           int(golden["sample_size"]))
  expected = golden["grids"][:, 0].transpose(0, 2, 3, 1)
  chex.assert_shape(grids, expected.shape)
  np.testing.assert_array_equal(grids, expected)
  np.testing.assert_array_equal(targets, golden["grid_targets"])


def test_scores_match_the_official_code(golden):
  n_imgs, smooth = int(golden["n_imgs"]), int(golden["smooth"])
  scores = np.concatenate([
      np.asarray(localisation.score(a.transpose(0, 2, 3, 1), n_imgs=n_imgs, smooth=smooth))
      for a in golden["attributions"]])
  reference = golden["scores"]
  assert np.abs(scores - reference).max() <= 1e-4 * np.abs(reference).max()


@pytest.mark.parametrize("n_imgs", [4, 9])
def test_attribution_in_the_right_tile_scores_one(n_imgs):
  side, tile = int(n_imgs**0.5), 8
  maps = np.zeros((n_imgs, side * tile, side * tile), np.float32)
  for k in range(n_imgs):  # tile k: column k // side, row k % side
    col, row = divmod(k, side)
    maps[k, row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = 1.0
  chex.assert_trees_all_close(localisation.score(maps, n_imgs=n_imgs), np.ones(n_imgs))


@pytest.mark.parametrize("n_imgs", [4, 9])
def test_uniform_attribution_scores_one_over_n(n_imgs):
  maps = np.ones((n_imgs, 24, 24, 6), np.float32)
  chex.assert_trees_all_close(localisation.score(maps, n_imgs=n_imgs),
                              np.full(n_imgs, 1 / n_imgs), rtol=1e-6)


def test_no_positive_attribution_scores_zero():
  assert float(localisation.score(-np.ones((4, 16, 16)), n_imgs=4).sum()) == 0.0


def test_tiles_are_column_major():
  images = np.arange(4)[:, None, None, None] * np.ones((4, 2, 2, 1))
  grid = localisation.tile(images)
  np.testing.assert_array_equal(grid[::2, ::2, 0], [[0, 2], [1, 3]])


def test_no_confidence_threshold_keeps_every_correct_image():
  labels = np.repeat(np.arange(6), 3)
  logits = np.full(18, -3.0)  # sigmoid 0.05: nothing passes 0.5
  correct = np.ones(18, bool)
  assert localisation.sample_grid_indices(labels, logits, correct, 4).size == 0
  assert localisation.sample_grid_indices(labels, logits, correct, 4, conf_thresh=0).size > 0


def test_clear_errors():
  with pytest.raises(ValueError, match="square"):
    localisation.score(np.ones((5, 10, 10)), n_imgs=5)
  with pytest.raises(ValueError, match="n_imgs=4"):
    localisation.score(np.ones((9, 12, 12)), n_imgs=4)
  with pytest.raises(ValueError, match="fewer grids"):
    localisation.make_grids(np.zeros((4, 2, 2, 3)), [0, 1, 2, 3], np.arange(4), 4, 2)


def test_rescaled_evaluation_transform_halves_the_image():
  record = {"image": np.full((32, 32, 3), 100, np.uint8), "label": 3}
  out = recipes.rescaled_eval("digits", 2)(record)
  chex.assert_shape(out["image"], (16, 16, 3))
  assert out["label"] == 3
  jpeg_like = recipes.rescaled_eval("bcos_final", 3)
  assert jpeg_like.keywords == {"resize": 85, "crop": 74}


def test_allow_fewer_grids_stops_when_the_order_runs_out():
  images, labels = np.zeros((12, 2, 2, 3)), np.arange(12) % 4
  grids, targets = localisation.make_grids(images, labels, np.arange(12), 4, 5, allow_fewer=True)
  chex.assert_shape(grids, (2, 4, 4, 3))  # each grid uses 4 images and skips 1
  chex.assert_shape(targets, (2, 4))
