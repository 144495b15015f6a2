"""The localisation metric: golden parity with the official code, its reference levels, and
the whole analysis end to end on a test set whose classes a model recognises."""

import json
import pathlib

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bcos_jax import data, models
from bcos_jax.data import recipes
from bcos_jax.evaluate import attribution, localisation

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


# -- The whole analysis (localisation.run) and the command.

NUM_CLASSES, SIZE = 6, 8


class ColourClassifier(nnx.Module):
  """Class c is an image of grey level 40·c; logits peak at the matching level."""

  def __init__(self, *, rngs):
    del rngs

  def __call__(self, x6, *, explain=False):
    del explain
    level = x6[..., 0].mean(axis=(1, 2))[:, None]
    centres = jnp.arange(NUM_CLASSES) * 40 / 255
    return 5.0 - 1e4 * (level - centres) ** 2


def _colour_classifier():
  if "test_colour_classifier" not in models.names():
    models.register("test_colour_classifier",
                    models.Family("colour_classifier", ColourClassifier, lambda m, p: {}))
  return models.create("test_colour_classifier", rngs=nnx.Rngs(0))


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
  setting = localisation.Setting(n_imgs=4, count=5, smooth=1)
  methods = {"oracle": _tile_oracle, "uniform": _uniform, "gradient":
             attribution.gradient}
  scores = localisation.run(_colour_classifier(), _source(), identity, identity, methods, setting)
  chex.assert_shape(scores["oracle"], (20,))
  np.testing.assert_allclose(scores["oracle"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(scores["uniform"], 0.25, rtol=1e-6)
  assert np.all(np.isfinite(scores["gradient"]))
  stem = localisation.write_results(tmp_path, scores, setting)
  summary = json.loads(stem.with_suffix(".json").read_text())
  assert summary["scores"]["oracle"]["median"] == 1.0
  assert stem.with_suffix(".png").stat().st_size > 0
  assert set(np.load(stem.with_suffix(".npz")).files) == set(scores)


def test_maps_figure_shows_each_method_on_each_target_with_its_score():
  identity = lambda record: record  # noqa: E731  (images are already final)
  setting = localisation.Setting(n_imgs=4, count=2, smooth=1)
  model = _colour_classifier()
  grids, targets = localisation.build_grids(model, _source(), identity, identity, setting)
  chex.assert_shape(grids, (2, 2 * SIZE, 2 * SIZE, 3))
  assert all(len(set(t)) == 4 for t in targets)  # distinct classes per grid
  fig = localisation.maps_figure(model, grids[0], targets[0],
                                 {"oracle": _tile_oracle, "uniform": _uniform},
                                 smooth=1, class_names=[f"grey {c}" for c in range(NUM_CLASSES)])
  axes = fig.axes
  assert len(axes) == 4 * 3
  titles = [ax.get_title() for ax in axes]
  assert titles[0] == f"explain grey {targets[0][0]}"
  assert titles[1:3] == ["oracle 1.00", "uniform 0.25"]  # the scores `run` gives them


def test_method_sets_by_name():
  assert list(attribution.methods_by_name(["all"])) == list(attribution.METHODS)
  # The CVPR paper's comparison (Fig. 6): the model's own explanation and seven post-hoc ones.
  assert list(attribution.methods_by_name(["paper"])) == [
      "bcos", "gradient", "input_x_gradient", "integrated_gradients", "deeplift", "grad_cam",
      "lime", "rise"]
  # A conventional model has no model-inherent explanation; duplicates are kept once.
  conventional = attribution.methods_by_name(["grad_cam", "paper"], bcos=False)
  assert list(conventional)[:2] == ["grad_cam", "gradient"] and "bcos" not in conventional
  assert set(attribution.PAPER_LABELS) == set(attribution.METHODS)
  assert attribution.PAPER_LABELS["occ9_ti"] == "Occ9-TI"


def test_box_plot_labels_the_methods_as_the_papers(tmp_path, monkeypatch):
  from matplotlib.axes import Axes

  seen = []
  original = Axes.set_xticks
  monkeypatch.setattr(Axes, "set_xticks",
                      lambda self, ticks, labels=None, **kw: (seen.append(list(labels)),
                                                              original(self, ticks, labels, **kw)))
  scores = {"bcos": np.full(4, 0.8), "occ13_ti": np.full(4, 0.5), "mine": np.full(4, 0.2)}
  localisation.box_plot(tmp_path / "box.png", scores, n_imgs=4)
  assert seen == [["Ours", "Occ13-TI", "mine"]]


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
  config.optimizer.schedule, config.optimizer.learning_rate = "constant", 1e-3
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
