"""`python -m bcos_jax.explain` on a tiny saved model: figures, JSON, and one-line user errors.

The model directory doubles as a training workdir: `models.load` reads a saved
model or a run's checkpoints alike, and the config.json beside it names the
run's recipe, dataset and class subset, as a real workdir's does.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import skimage.data
from flax import nnx
from PIL import Image

from bcos_jax import explain as bx
from bcos_jax import models

ROOT = pathlib.Path(__file__).parents[2]
CLASSES = [7, 2, 9, 4]  # the run's subset of the digits: its classes 0..3 are named "7", "2", ...

# Runs several command lines in one process, each as `cli.run` runs it (flags parsed,
# user errors printed as one line, exit code), so each bad input costs no JAX start-up.
DRIVER = """
import contextlib, io, json, sys
from absl.testing import flagsaver
from bcos_jax import cli
from bcos_jax.explain import __main__ as command

results = []
for argv in json.loads(sys.argv[1]):
  sys.argv, stderr = ["explain", *argv], io.StringIO()
  with flagsaver.flagsaver(), contextlib.redirect_stderr(stderr):
    try:
      cli.run(command.main)
    except SystemExit as exit:
      results.append({"code": exit.code, "stderr": stderr.getvalue()})
print(json.dumps(results))
"""


def _python(*args) -> subprocess.CompletedProcess:
  environment = {**os.environ, "XLA_FLAGS": ""}  # one device, as a user's command
  environment.pop("BCOS_JAX_TRACEBACK", None)
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=environment,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
  from bcos_jax.data import digits

  root = tmp_path_factory.mktemp("explain_command")
  data_dir = root / "tfds"
  digits.ensure_prepared(str(data_dir))
  run = root / "run"
  # The widths of the other tests' models: their initialisers are compiled already.
  models.save(models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0),
                            widths=(8, 8, 16, 16, 16, 16, 16, 16), num_classes=len(CLASSES)), run)
  (run / "config.json").write_text(json.dumps(
      {"dataset": "bcos_digits", "eval_split": "test", "data_dir": str(data_dir),
       "recipe": "digits", "classes": CLASSES}))
  Image.fromarray(skimage.data.astronaut()).resize((45, 37)).save(root / "rgb.png")
  Image.fromarray(skimage.data.camera()).resize((29, 51)).save(root / "grey.jpg")
  (root / "text.png").write_text("not an image")
  return {"root": root, "run": run, "rgb": root / "rgb.png", "grey": root / "grey.jpg",
          "text": root / "text.png"}


def _cases(files) -> dict[str, tuple[list[str], str]]:
  """Command lines by name, each with what its one line on stderr says ("" for success)."""
  run, rgb, grey, root = (str(files[k]) for k in ("run", "rgb", "grey", "root"))
  image, out = [f"--image={rgb}"], f"--out={root}/x.png"
  return {
      "top_k": ([f"--workdir={run}", *image, f"--image={grey}", "--top_k=2",
                 f"--out={root}/top_k"], ""),
      "classes": ([f"--model_dir={run}", *image, f"--image={grey}", "--classes=1,3",
                   f"--out={root}/classes"], ""),
      "unit": ([f"--workdir={run}", *image, "--unit=layers.4:2", f"--out={root}/unit.png"], ""),
      "not an image": ([f"--workdir={run}", f"--image={files['text']}", out],
                       "is not an image file that PIL can read"),
      "missing image": ([f"--workdir={run}", f"--image={root}/missing.png", out],
                        "does not exist"),
      "missing model": ([f"--model_dir={root}/nowhere", *image, out], "no such directory"),
      "unknown layer": ([f"--workdir={run}", *image, "--unit=layers.42:0", out],
                        "no submodule 'layers.42'; valid layers: head, layers.0, layers.1"),
      "channel": ([f"--workdir={run}", *image, "--unit=layers.4:16", out],
                  "channel 16 is out of range: layer 'layers.4' has 16 channels (0..15)"),
      "top_k too large": ([f"--workdir={run}", *image, "--top_k=5", out],
                          "top_k=5 must be between 1 and the model's 4 classes"),
      "class out of range": ([f"--workdir={run}", *image, "--classes=1,4", out],
                             "--classes [1, 4] must be class indices of the model, 0..3"),
      "no model": ([*image, out], "give exactly one of --workdir"),
  }


@pytest.fixture(scope="module")
def outcomes(files) -> dict[str, dict]:
  """Every case of `_cases`, run in one process: name -> {"code", "stderr"}."""
  cases = _cases(files)
  result = _python("-c", DRIVER, json.dumps([argv for argv, _ in cases.values()]))
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(zip(cases, json.loads(result.stdout.splitlines()[-1]), strict=True))


def test_out_dir_has_a_figure_per_image_and_the_true_top_classes(files, outcomes):
  assert outcomes["top_k"]["code"] == 0, outcomes["top_k"]
  out = files["root"] / "top_k"
  assert sorted(p.name for p in out.iterdir()) == ["grey.png", "rgb.png", "top_classes.json"]
  summary = json.loads((out / "top_classes.json").read_text())
  assert (summary["model"], summary["recipe"]) == ("v1_cifar9l_b2", "digits")
  model = models.load(files["run"])
  images = bx.load_images([files["rgb"], files["grey"]], "digits")
  logits = np.asarray(jax.jit(lambda x: models.eval_mode(model)(x))(
      models.input_transform(model)(images)))
  for entry, path, row in zip(summary["images"], ("rgb", "grey"), logits, strict=True):
    assert entry["image"] == str(files[path]) and entry["figure"] == f"{path}.png"
    top = np.argsort(-row, kind="stable")[:2]
    assert [c["index"] for c in entry["classes"]] == list(top)
    assert [c["name"] for c in entry["classes"]] == [str(CLASSES[c]) for c in top]
    np.testing.assert_allclose([c["logit"] for c in entry["classes"]], row[top], rtol=1e-4)
    np.testing.assert_allclose([c["probability"] for c in entry["classes"]],
                               jax.nn.sigmoid(row[top]), rtol=1e-4)


def test_chosen_classes_and_units(files, outcomes):
  assert outcomes["classes"]["code"] == 0 and outcomes["unit"]["code"] == 0, outcomes
  summary = json.loads((files["root"] / "classes" / "top_classes.json").read_text())
  assert summary["recipe"] == "bcos_final"  # a model directory records no preprocessing
  assert [[c["name"] for c in e["classes"]] for e in summary["images"]] == [
      ["class 1", "class 3"]] * 2  # nor a dataset
  assert (files["root"] / "unit.png").stat().st_size > 0


def test_each_bad_input_is_one_line_with_exit_code_2(files, outcomes):
  for name, (_, message) in _cases(files).items():
    if message:
      lines = outcomes[name]["stderr"].strip().splitlines()
      assert outcomes[name]["code"] == 2, (name, outcomes[name])
      assert len(lines) == 1 and lines[0].startswith("error: "), (name, outcomes[name])
      assert message in lines[0], (name, outcomes[name])


def test_the_module_runs_as_a_command(files):
  result = _python("-m", "bcos_jax.explain", f"--workdir={files['run']}",
                   f"--image={files['text']}", f"--out={files['root']}/x.png")
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [
      f"error: {str(files['text'])!r} is not an image file that PIL can read (JPEG, PNG, ...)"]
