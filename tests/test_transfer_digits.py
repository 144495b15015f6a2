"""launch/transfer_digits.py at CI size: every stage measured, resumable, linear probe frozen."""

import json
import pathlib

import launchers
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from flax import nnx

from bcos_jax import models
from bcos_jax.errors import UserError

ROOT = pathlib.Path(__file__).parents[1]
# Two steps leave the models at chance: too few correct digits for a localisation grid.
TINY = ["--steps=2", "--grids=0", "--width=0.0625", "--explanations=0"]


def _launcher():
  return launchers.load("transfer_digits")


def _main(root, data_dir, *extra) -> list[dict]:
  launcher = _launcher()
  with flagsaver.flagsaver():  # parsed as `cli.run` parses them, restored afterwards
    argv = flags.FLAGS(["transfer_digits", f"--root={root}", f"--data_dir={data_dir}", *TINY,
                        *extra])
    launcher.main(argv)
  return json.loads((root / "transfer_digits.json").read_text())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  root = tmp_path_factory.mktemp("transfer_digits")
  return root, data_dir, _main(root, data_dir)


def test_every_stage_is_measured(demo, capsys):
  root, _, rows = demo
  assert [row["stage"] for row in rows] == ["pretrain", "linear_probe", "full", "scratch"]
  assert [row["classes"] for row in rows] == [[0, 1, 2, 3, 4]] + [[5, 6, 7, 8, 9]] * 3
  for row in rows:
    assert row["steps"] == 2 and 0 <= row["top1"] <= 1 and row["train_seconds"] > 0
    assert row["test_images"] == (193 if row["stage"] == "pretrain" else 167)
    assert (row["grids"], row["localisation"]) == (0, None)
    assert [step for step, _ in row["top1_by_step"]] == [0, 2]
  for stage in ("linear_probe", "full"):
    config = json.loads((root / stage / "config.json").read_text())
    assert config["init_from"] == str(root / "pretrain") and config["finetune"]["new_head"]
    assert config["finetune"]["mode"] == stage
  markdown = (root / "transfer_digits.md").read_text()
  assert markdown.count("\n| ") == 4 and "| linear_probe | 5–9 | pretrain |" in markdown


def _variables(model):
  return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model))}


def test_the_transferred_models_have_a_new_five_class_head(demo):
  root, _, _ = demo
  pretrained = _variables(models.load(root / "pretrain"))
  probed, full = (models.load(root / s) for s in ("linear_probe", "full"))
  assert dict(probed.config.kwargs)["num_classes"] == 5
  assert probed.logit_layer.bias == pytest.approx(-np.log(4))
  changed = [p for p, v in _variables(probed).items() if not np.array_equal(v, pretrained[p])]
  assert changed and all(path[0] == "head" for path in changed)  # only the head was trained
  assert any(not np.array_equal(v, pretrained[p]) for p, v in _variables(full).items()
             if p[0] != "head")


def test_finished_stages_are_not_redone(demo, capsys):
  root, data_dir, rows = demo
  assert _main(root, data_dir) == rows
  err = capsys.readouterr().err
  assert all(f"{stage}: done before" in err for stage in ("pretrain", "full", "scratch"))
  with pytest.raises(UserError, match=r"other settings \(steps: \{'steps': 2\} then"):
    _main(root, data_dir, "--steps=3")
