"""launch/prepare_data.py on a clean machine: what it prepares, and what it says it needs."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from bcos_jax import data

ROOT = pathlib.Path(__file__).parents[2]


def _prepare(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "XLA_FLAGS": ""}
  return subprocess.run([sys.executable, str(ROOT / "launch" / "prepare_data.py"), *args],
                        capture_output=True, text=True, env=env, timeout=600, check=False)


def test_prepares_an_image_folder_and_the_digits(jpeg_folder, tmp_path):
  result = _prepare(f"--image_folder={jpeg_folder}", "--name=my_images",
                    f"--data_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert len(data.open_source("my_images", "test", str(tmp_path))) == 6
  result = _prepare("--dataset=bcos_digits", f"--data_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert len(data.open_source("bcos_digits", "test", str(tmp_path))) == 360


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed: the script would download CIFAR-10")
def test_tfds_datasets_say_they_need_tensorflow(tmp_path):
  result = _prepare("--dataset=cifar10", f"--data_dir={tmp_path}")
  assert result.returncode != 0
  assert "pip install tensorflow-cpu" in result.stderr


def test_bad_arguments_say_what_to_give(tmp_path):
  assert "--dataset=NAME" in _prepare(f"--data_dir={tmp_path}").stderr
  assert "--name" in _prepare(f"--image_folder={tmp_path}").stderr
