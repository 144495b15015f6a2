"""The notebooks in colabs/ run (at tiny sizes) and follow the house rules, so they cannot rot."""

import json
import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
# What each notebook must print when it works (beyond finishing without an error).
EXPECTED_OUTPUT = {
    "bcosify.ipynb": ["contributions + offset == logit - bias: True",
                      "B-cosified, after fine-tuning: test top-1"],
    "localisation.ipynb": ["the first explains classes", "| Ours |", "| GCam |", "| IxG |",
                           "_smooth1.png"],
    "neurons.ipynb": ["'layers.4'", "top-activating records of layers.4:0:",
                      "top-activating records of layers.4:1:"],
    "pretrained.ipynb": ["STAND-IN: wrote a randomly initialised resnet18",
                         "wrote resnet18 (", "contributions sum to logit - bias: True",
                         "same W(x): True"],
    "train_on_accelerator.ipynb": ["prepared 'smoke_digits'", "SIGTERM: stopped after step",
                                   "resumed from the checkpoint of step", "exit code 0"],
    "quickstart.ipynb": ["contributions sum to logit - bias: True",
                         "Δ contributions sum to the logit difference: True",
                         "layers.4:0 contributions sum to its activations: True"],
}


def _code(notebook) -> list[str]:
  return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_every_notebook_is_checked():
  assert [p.name for p in NOTEBOOKS] == sorted(EXPECTED_OUTPUT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_house_rules(path):
  notebook = nbformat.read(path, as_version=4)
  first = notebook.cells[0]
  assert first.cell_type == "markdown" and "colab.research.google.com/github/" in first.source
  assert f"blob/main/colabs/{path.name}" in first.source
  install = _code(notebook)[0]
  assert "pip" in install and 'find_spec("bcos_jax") is None' in install  # a no-op if installed
  for source in _code(notebook):
    # Only bcos_jax's API: no library code written in a notebook.
    assert not re.search(r"^\s*(def|class) ", source, re.MULTILINE), source[:200]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.setenv("BCOS_JAX_SMOKE", "1")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("MPLBACKEND", "agg")
  # One CPU device, as on a Colab CPU runtime: the notebooks' own runs, not the
  # sharding tests' eight (which cost a notebook up to a third more).
  monkeypatch.setenv("XLA_FLAGS", "")
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  printed = "\n".join(
      output.get("text", "") if output.output_type == "stream"
      else json.dumps(output.get("data", {}).get("text/plain", ""))
      for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
  for expected in EXPECTED_OUTPUT[path.name]:
    assert expected in printed, printed[-3000:]
  assert os.environ["BCOS_JAX_SMOKE"] == "1"
