"""The torch-free checkpoint reader, on files written by real PyTorch (2.13)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from bcos_jax.convert import torch_files
from bcos_jax.errors import UserError

FILES = pathlib.Path(__file__).parents[1] / "golden" / "torch_files"
EXPECTED = json.loads((FILES / "expected.json").read_text())


def _check(state_dict):
  assert list(state_dict) == list(EXPECTED)
  for key, want in EXPECTED.items():
    array = state_dict[key]
    assert list(array.shape) == want["shape"], key
    np.testing.assert_allclose(array.astype(np.float64).ravel(), want["values"], rtol=1e-6,
                               err_msg=key)
  assert state_dict["bn.num_batches_tracked"].dtype == np.int64
  assert state_dict["half"].dtype == np.float16
  assert state_dict["bf16"].dtype == np.float32  # widened
  assert state_dict["transposed"].flags.c_contiguous


@pytest.mark.parametrize("name", ["zip.pth", "legacy.pth", "plain.pkl"])
def test_reads_every_layout(name):
  _check(torch_files.state_dict_from_file(FILES / name))


def test_nested_checkpoint_and_dataparallel_prefix():
  _check(torch_files.state_dict_from_file(FILES / "nested.pth"))


def test_refuses_a_pickled_module():
  with pytest.raises(torch_files.TorchFileError, match="refusing"):
    torch_files.load(FILES / "module.pth")


def test_truncated_and_foreign_files(tmp_path):
  data = (FILES / "zip.pth").read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
  (tmp_path / "cut_legacy.pth").write_bytes((FILES / "legacy.pth").read_bytes()[:900])
  (tmp_path / "text.pth").write_text("not a checkpoint")
  for name in ("cut.pth", "cut_legacy.pth", "text.pth"):
    with pytest.raises(torch_files.TorchFileError):
      torch_files.state_dict_from_file(tmp_path / name)
  with pytest.raises(torch_files.TorchFileError, match="does not exist"):
    torch_files.load(tmp_path / "missing.pth")


def test_convert_command_writes_a_loadable_model(tmp_path):
  """A real torch.save of a (small) B-cos ResNet state dict through the CLI."""
  import jax
  import jax.numpy as jnp

  from bcos_jax import models
  from bcos_jax.convert import __main__ as cli
  from bcos_jax.convert import from_torch_state_dict
  from bcos_jax.models import registry

  name = "test_tiny_resnet"
  if name not in models.names():
    registry.register(name, models.resnet.FAMILY, stem_width=8, layers=(1, 1), num_classes=10)
  path = FILES / "tiny_resnet.pth"
  # In process (the test model is registered only here), parsing the command
  # line as `app.run` does; flagsaver restores the flags afterwards.
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["convert", "--model", name, "--torch_checkpoint", str(path), "--out",
                        str(tmp_path / "out")])
    assert cli.main(argv) == 0
  loaded = models.load(tmp_path / "out")
  direct = from_torch_state_dict(name, torch_files.state_dict_from_file(path))
  x6 = jnp.concatenate([jnp.full((1, 32, 32, 3), 0.3), jnp.full((1, 32, 32, 3), 0.7)], -1)
  np.testing.assert_allclose(jax.jit(lambda x: loaded(x))(x6), direct(x6), rtol=1e-6)
  assert loaded.config.name == name
  # Bad input: the wrong architecture gives the mismatch listing, exit code 2.
  result = subprocess.run([sys.executable, "-m", "bcos_jax.convert", "--model", "v1_cifar9l_b2",
                           "--torch_checkpoint", str(path), "--out", str(tmp_path / "bad")],
                          capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": ""},
                          cwd=FILES.parents[2], timeout=600, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert any(line.startswith("error: ") for line in result.stderr.splitlines()), result.stderr
  assert not (tmp_path / "bad").exists()


def test_written_state_dicts_read_back_exactly(tmp_path):
  """save_state_dict writes torch.save's zip layout: records 64-byte aligned, every
  dtype and shape (0-d, empty, transposed) read back bit for bit."""
  import struct
  import zipfile

  state_dict = {"conv.weight": np.random.default_rng(0).standard_normal((4, 3, 2, 2)),
                "bn.num_batches_tracked": np.zeros((), np.int64),
                "half": np.arange(6, dtype=np.float16).reshape(2, 3).T,
                "empty": np.zeros((0, 3), np.float32), "flags": np.array([True, False])}
  path = tmp_path / "written.pth"
  torch_files.save_state_dict(state_dict, path)
  read = torch_files.state_dict_from_file(path)
  assert list(read) == list(state_dict)
  for key, value in state_dict.items():
    assert read[key].dtype == value.dtype and read[key].shape == value.shape, key
    np.testing.assert_array_equal(read[key], value)
  raw = path.read_bytes()
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    for info in archive.infolist():
      name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:
                                                          info.header_offset + 30])
      assert (info.header_offset + 30 + name_length + extra_length) % 64 == 0, info.filename
  assert {"written/data.pkl", "written/version", "written/byteorder"} <= set(names)
  assert not (tmp_path / "written.pth.partial").exists()
  with pytest.raises(UserError, match="no PyTorch storage"):
    torch_files.save_state_dict({"c": np.zeros(2, np.complex64)}, tmp_path / "bad.pth")
