"""launch/bcosify_digits.py at CI size: three stages measured, exact explanations, resumable.

One test runs the launcher once (about 40 s on 2 cores) and checks each part
with a helper, so that pytest-xdist does not run it again on other workers.
"""

import json
import pathlib

import jax.numpy as jnp
import launchers
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from bcos_jax import explain, models

ROOT = pathlib.Path(__file__).parents[1]
TINY = ["--layers=1,1", "--stem_width=4", "--batch_size=16", "--steps=3", "--finetune_steps=3",
        "--grids=2", "--explained=4"]


def _launcher():
  return launchers.load("bcosify_digits")


def _main(root, data_dir, *extra) -> list[dict]:
  launcher = _launcher()
  # Parsed as `cli.run` parses them; flagsaver restores the flags afterwards.
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["bcosify_digits", f"--root={root}", f"--data_dir={data_dir}", *TINY,
                        *extra])
    launcher.main(argv)
  return json.loads((root / "bcosify_digits.json").read_text())


def test_the_demonstration_at_ci_size(tmp_path, monkeypatch):
  from bcos_jax.data import digits

  data_dir = str(tmp_path / "tfds")
  digits.ensure_prepared(data_dir)
  root = tmp_path / "bcosify_digits"
  rows = _main(root, data_dir)
  _check_every_stage_is_measured(root, rows)
  for stage in ("bcosified", "finetuned"):
    _check_the_explanations_are_exact(root, data_dir, rows, stage)
  _check_a_rerun_redoes_no_finished_stage(root, data_dir, rows, monkeypatch)


def _check_every_stage_is_measured(root, rows):
  assert [row["stage"] for row in rows] == ["conventional", "bcosified", "finetuned"]
  assert [row["model"] for row in rows] == ["standard_resnet18", "bcosified_resnet18",
                                            "bcosified_resnet18"]
  methods = {"conventional": {"input_x_gradient", "grad_cam"},
             "bcosified": {"bcos", "input_x_gradient", "grad_cam"},
             "finetuned": {"bcos", "input_x_gradient", "grad_cam"}}
  for row in rows:
    assert 0 <= row["top1"] <= 1
    assert row["grids"] >= 1 and row["grids_of"] in (row["stage"], "test set")
    assert set(row["localisation"]) == methods[row["stage"]], row["stage"]
    for method, score in row["localisation"].items():
      assert 0 <= score["median"] <= 1 and 0 <= score["mean"] <= 1, (row["stage"], method)
      assert score["seconds"] > 0
    made = "convert" if row["stage"] == "bcosified" else "train"
    assert set(row["seconds"]) == {made, "accuracy", "localisation", "total"}
    assert all(seconds > 0 for seconds in row["seconds"].values()), row["seconds"]
    assert row["seconds"]["total"] >= row["seconds"][made] + row["seconds"]["localisation"]
    assert ("exactness" in row) == row["bcos"]
    assert (root / row["stage"] / "localisation" / "2_2x2_smooth1.npz").is_file()
  # The fine-tuning ran its steps from the B-cosified model.
  config = json.loads((root / "finetuned" / "config.json").read_text())
  assert config["init_from"] == str(root / "bcosified") and config["model"]["name"] == ""
  assert config["loss"]["name"] == "bce"
  assert json.loads((root / "conventional" / "config.json").read_text())["loss"]["name"] == \
      "softmax_cross_entropy"
  markdown = (root / "bcosify_digits.md").read_text()
  for row in rows:
    assert f"| {row['stage']} | {row['model']} | {row['top1']:.4f} |" in markdown


def _check_the_explanations_are_exact(root, data_dir, rows, stage):
  from bcos_jax import data

  model = models.load(root / stage)
  assert models.info(model).bcos and model.config.name == "bcosified_resnet18"
  source = data.open_source("bcos_digits", "test", data_dir)
  images = np.stack([data.get_recipe("digits").eval(source[i])["image"] for i in range(4)])
  x = models.input_transform(model)(jnp.asarray(images))
  e = explain.explain(model, x)
  logits = e.logits[jnp.arange(4), e.targets]
  total = e.contributions.sum(axis=(1, 2)) + explain.mean_offset(model, e.weights)
  # As the golden B-cosification test: exact up to float32 rounding of the logits.
  scale = float(jnp.abs(logits).max())
  np.testing.assert_allclose(total, logits - model.logit_layer.bias, rtol=1e-4,
                             atol=1e-5 * scale)
  # The offset of the model's own input normalisation is needed for that.
  assert not np.allclose(e.contributions.sum(axis=(1, 2)), logits - model.logit_layer.bias,
                         rtol=1e-4, atol=1e-5 * scale)
  exact = next(row for row in rows if row["stage"] == stage)["exactness"]
  assert exact["max_abs_error"] <= 1e-5 * exact["max_abs_logit"]


def _check_a_rerun_redoes_no_finished_stage(root, data_dir, rows, monkeypatch):
  import bcos_jax.convert.bcosify
  import bcos_jax.evaluate.localisation
  import bcos_jax.train

  def refuse(*args, **kwargs):
    raise AssertionError("a finished stage was redone")

  for module, name in ((bcos_jax.train, "train_and_evaluate"),
                       (bcos_jax.convert.bcosify, "bcosify"),
                       (bcos_jax.evaluate.localisation, "run"),
                       (bcos_jax.evaluate.localisation, "grid_scores")):
    monkeypatch.setattr(module, name, refuse)
  (root / "bcosify_digits.json").unlink()
  assert _main(root, data_dir) == rows
  # Other settings for a finished stage are an error, not a silent reuse.
  from bcos_jax.errors import UserError

  with pytest.raises(UserError, match="finetune_lr"):
    _main(root, data_dir, "--finetune_lr=0.5")
