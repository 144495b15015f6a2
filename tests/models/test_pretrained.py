"""bcos_jax.models.pretrained: the release table, and download -> verify -> convert -> cache.

No internet: a small official-format checkpoint of a test ResNet is served from a
loopback HTTP server, and the table gets a test entry pointing at it.
"""

import dataclasses
import functools
import hashlib
import http.server
import importlib
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from flax import nnx

from bcos_jax import convert, models
from bcos_jax.convert import torch_files
from bcos_jax.errors import UserError
from bcos_jax.models import registry

# `models.pretrained` is the function; the table and helpers live in its module.
hub = importlib.import_module("bcos_jax.models.pretrained")

ROOT = pathlib.Path(__file__).parents[2]
MANIFESTS = json.loads((ROOT / "tests" / "golden" / "manifests.json").read_text())
TINY = "test_tiny_resnet"  # as tests/convert/test_torch_files.py registers it


@dataclasses.dataclass(frozen=True)
class Release:
  """A release file written as the official ones are: NAME-<sha256 prefix>.pth."""
  directory: pathlib.Path
  file_name: str
  data: bytes
  sha256: str
  x6: np.ndarray
  logits: np.ndarray


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
  if TINY not in models.names():
    registry.register(TINY, models.resnet.FAMILY, stem_width=8, layers=(1, 1), num_classes=10)
  state_dict = convert.to_torch_state_dict(models.create(TINY, rngs=nnx.Rngs(0)))
  directory = tmp_path_factory.mktemp("release")
  torch_files.save_state_dict(state_dict, directory / "tiny_resnet.pth")
  data = (directory / "tiny_resnet.pth").read_bytes()
  sha256 = hashlib.sha256(data).hexdigest()
  file_name = f"tiny_resnet-{sha256[:10]}.pth"
  (directory / "tiny_resnet.pth").rename(directory / file_name)
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  x6 = np.concatenate([x, 1 - x], -1)
  logits = np.asarray(convert.from_torch_state_dict(TINY, state_dict)(x6))
  return Release(directory, file_name, data, sha256, x6, logits)


class _Server:
  """An http.server on 127.0.0.1 (a free port) in a background thread."""

  def __init__(self, handler):
    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_port}"
    self.thread = threading.Thread(target=self.httpd.serve_forever,
                                   kwargs={"poll_interval": 0.05}, daemon=True)
    self.thread.start()

  def stop(self):
    if self.thread.is_alive():
      self.httpd.shutdown()
      self.thread.join()
    self.httpd.server_close()


class _Files(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):  # keep the test output to the failures
    del args


class _CutOff(http.server.BaseHTTPRequestHandler):
  """Announces the whole file, sends half of it and closes the connection."""
  payload = b""

  def do_GET(self):  # noqa: N802  (http.server's name)
    self.send_response(200)
    self.send_header("Content-Length", str(len(self.payload)))
    self.end_headers()
    self.wfile.write(self.payload[: len(self.payload) // 2])
    self.wfile.flush()
    self.close_connection = True

  def log_message(self, *args):
    del args


@pytest.fixture
def files(release):
  server = _Server(functools.partial(_Files, directory=str(release.directory)))
  yield server
  server.stop()


def _use(monkeypatch, tmp_path, base_url: str, file_name: str) -> pathlib.Path:
  """Points the cache at tmp_path/cache, the base URL at the server, TINY at `file_name`."""
  cache = tmp_path / "cache"
  monkeypatch.setenv(hub.CACHE_ENV, str(cache))
  monkeypatch.setenv(hub.URL_ENV, base_url)
  monkeypatch.setitem(hub.WEIGHTS, TINY, file_name)
  return cache


def _leftovers(cache: pathlib.Path) -> list[str]:
  return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _no_network(*args, **kwargs):
  raise AssertionError(f"the network was used: {args} {kwargs}")


def test_downloads_verifies_converts_caches_then_loads_offline(release, files, monkeypatch,
                                                                tmp_path, capsys):
  cache = _use(monkeypatch, tmp_path, files.url, release.file_name)
  start = time.perf_counter()
  model = models.pretrained(TINY, progress=True)  # the bar on a stderr that is no terminal
  seconds = time.perf_counter() - start
  err = capsys.readouterr().err
  assert f"downloading {files.url}/{release.file_name}" in err, err
  assert "SHA-256 verified" in err and "MiB" in err, err
  np.testing.assert_allclose(model(release.x6), release.logits, rtol=1e-6)
  # Evaluation mode: running statistics, so an image's logits do not depend on its batch.
  np.testing.assert_allclose(model(release.x6[:1]), release.logits[:1], rtol=1e-5, atol=1e-6)
  entry = cache / TINY
  assert (entry / "model_config.json").is_file()
  source = json.loads((entry / hub.SOURCE_FILE).read_text())
  assert source == {"url": f"{files.url}/{release.file_name}", "file": release.file_name,
                    "sha256": release.sha256, "bytes": len(release.data)}
  assert _leftovers(cache) == [TINY]  # no temporary download or conversion left
  print(f"\n[download figures] {release.file_name}: {len(release.data):,} bytes; "
        f"download + verify + convert + cache {seconds:.2f} s")

  # The server is gone and the network forbidden: the cache entry is all it needs.
  files.stop()
  monkeypatch.setattr(urllib.request, "urlopen", _no_network)
  again = models.pretrained(TINY)
  np.testing.assert_allclose(again(release.x6), release.logits, rtol=1e-6)
  assert again.config.name == TINY


def test_download_streams_in_chunks_with_a_progress_bar(tmp_path, monkeypatch, capsys):
  blob = np.random.default_rng(1).bytes(8 * 2**20 + 123)  # 9 chunks, the last partial
  (tmp_path / "blob.bin").write_bytes(blob)
  server = _Server(functools.partial(_Files, directory=str(tmp_path)))
  try:
    destination = io.BytesIO()
    got = hub.download(f"{server.url}/blob.bin", destination, progress=True)
  finally:
    server.stop()
  assert destination.getvalue() == blob
  assert got.size == len(blob) and got.sha256 == hashlib.sha256(blob).hexdigest()
  assert "blob.bin" in capsys.readouterr().err  # the bar's description, without a terminal
  print(f"\n[download figures] loopback: {got.size:,} bytes in {got.seconds * 1e3:.0f} ms "
        f"({got.size / got.seconds / 2**20:.0f} MiB/s)")


def test_a_wrong_digest_caches_nothing(release, monkeypatch, tmp_path):
  wrong = "tiny_resnet-0123456789.pth"
  assert not release.sha256.startswith("0123456789")
  (tmp_path / "served").mkdir()
  (tmp_path / "served" / wrong).write_bytes(release.data)
  server = _Server(functools.partial(_Files, directory=str(tmp_path / "served")))
  try:
    cache = _use(monkeypatch, tmp_path, server.url, wrong)
    with pytest.raises(hub.HashMismatchError) as error:
      models.pretrained(TINY)
  finally:
    server.stop()
  assert "0123456789" in str(error.value) and release.sha256 in str(error.value)
  assert isinstance(error.value, UserError)
  assert _leftovers(cache) == []  # the temporary download was removed, no entry made


def test_a_connection_closed_half_way_caches_nothing(release, monkeypatch, tmp_path):
  server = _Server(type("CutOff", (_CutOff,), {"payload": release.data}))
  try:
    cache = _use(monkeypatch, tmp_path, server.url, release.file_name)
    with pytest.raises(hub.DownloadError, match=r"stopped after [\d,]+ of [\d,]+ bytes") as error:
      models.pretrained(TINY)
  finally:
    server.stop()
  assert f"python -m bcos_jax.convert --model {TINY} --torch_checkpoint FILE" in str(error.value)
  assert _leftovers(cache) == []


def test_no_server_and_http_errors_name_the_url_and_the_manual_route(release, files,
                                                                     monkeypatch, tmp_path):
  cache = _use(monkeypatch, tmp_path, files.url, "missing-0123456789.pth")
  with pytest.raises(hub.DownloadError, match="HTTP 404") as error:
    models.pretrained(TINY)
  assert f"{files.url}/missing-0123456789.pth" in str(error.value)
  with socket.socket() as probe:  # a port nobody listens on
    probe.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
  monkeypatch.setenv(hub.URL_ENV, closed)
  with pytest.raises(hub.DownloadError, match="could not reach") as error:
    models.pretrained(TINY)
  message = str(error.value)
  assert closed in message and "--torch_checkpoint FILE --out DIR" in message, message
  assert _leftovers(cache) == []


def test_names_without_weights_list_the_ones_with(monkeypatch, tmp_path):
  monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.setattr(urllib.request, "urlopen", _no_network)
  with pytest.raises(hub.NoPretrainedWeightsError, match="did you mean 'resnet50'") as error:
    models.pretrained("resnet5")
  assert "convnext_tiny_bnu" in str(error.value) and "vitc_l_patch1_14" in str(error.value)
  with pytest.raises(UserError, match="no weights in the B-cos v2 release") as error:
    models.pretrained("v1_cifar9l_b2")
  assert "resnet50_long" in str(error.value)
  assert not (tmp_path / "cache").exists()


def test_convert_command_writes_the_pretrained_model(release, files, monkeypatch, tmp_path):
  from bcos_jax.convert import __main__ as cli

  cache = _use(monkeypatch, tmp_path, files.url, release.file_name)
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["convert", f"--pretrained={TINY}", f"--out={tmp_path / 'out'}"])
    assert cli.main(argv) == 0
  loaded = models.load(tmp_path / "out")
  np.testing.assert_allclose(loaded(release.x6), release.logits, rtol=1e-6)
  assert (cache / TINY / "model_config.json").is_file()  # through the cache
  for extra in ([f"--torch_checkpoint={release.directory / release.file_name}"], ["--bcosify"]):
    with flagsaver.flagsaver():
      argv = flags.FLAGS(["convert", f"--pretrained={TINY}", f"--out={tmp_path / 'x'}", *extra])
      with pytest.raises(UserError, match="cannot be combined with --"):
        cli.main(argv)
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["convert", f"--out={tmp_path / 'x'}"])
    with pytest.raises(UserError, match="--pretrained=NAME"):
      cli.main(argv)
  assert not (tmp_path / "x").exists()


def test_evaluate_takes_pretrained_with_an_output_directory(tmp_path):
  """Checked before JAX starts: the command line alone (a subprocess, since the evaluate
  and convert commands both define --out)."""
  env = {**os.environ, "XLA_FLAGS": "", hub.CACHE_ENV: str(tmp_path / "cache")}
  common = [sys.executable, "-m", "bcos_jax.evaluate", "--pretrained=resnet50",
            "--dataset=imagenet2012", "--split=validation", "--recipe=bcos_final"]
  for extra, expected in (([], "--pretrained needs --out"),
                          ([f"--model_dir={tmp_path}"], "give exactly one of")):
    result = subprocess.run([*common, *extra], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {expected}" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
  assert not (tmp_path / "cache").exists()


def test_publish_keeps_an_entry_another_call_filled_first(tmp_path):
  entry = tmp_path / "resnet50"
  entry.mkdir()
  (entry / "model_config.json").write_text("{}")
  partial = tmp_path / ".resnet50.x.partial"
  partial.mkdir()
  (partial / "model_config.json").write_text('{"second": true}')
  hub.publish(partial, entry)
  assert (entry / "model_config.json").read_text() == "{}" and not partial.exists()
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "file").write_text("")
  partial.mkdir()
  with pytest.raises(hub.CacheError, match="holds no saved model"):
    hub.publish(partial, tmp_path / "junk")
  empty = tmp_path / "empty"
  empty.mkdir()
  hub.publish(partial, empty)  # an empty directory is replaced
  assert not partial.exists() and empty.is_dir()


def test_the_table_is_every_v2_hub_model_with_its_release_file():
  hub_models = sorted(name for name in MANIFESTS if not name.startswith("v1_"))
  assert sorted(hub.WEIGHTS) == hub_models == hub.available()
  for name, file_name in hub.WEIGHTS.items():
    assert name in models.names(), name
    assert MANIFESTS[name], name  # the official state-dict keys it converts from
    assert re.fullmatch(r"[a-z0-9_]+-[0-9a-f]{10}\.pth", file_name), file_name
    assert hub.hash_prefix(file_name) == file_name[-14:-4]
  assert len(set(hub.WEIGHTS.values())) == len(hub.WEIGHTS)
  assert hub.BASE_URL == "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
  with pytest.raises(ValueError, match="no SHA-256 prefix"):
    hub.hash_prefix("resnet_50.pth")


def test_an_unwritable_cache_says_which_variable_to_set(monkeypatch, tmp_path):
  (tmp_path / "a_file").write_text("")
  monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "a_file"))
  monkeypatch.setattr(urllib.request, "urlopen", _no_network)
  with pytest.raises(hub.CacheError, match=f"set {hub.CACHE_ENV} to a writable directory"):
    models.pretrained("resnet50")
