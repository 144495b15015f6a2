"""The official B-cos v2 weights by hub name: downloaded once, verified, converted, cached.

    model = bcos_jax.models.pretrained("resnet50")   # evaluation mode

The first call downloads the release file (`WEIGHTS`, under `BASE_URL`),
checks its SHA-256 as `torch.hub` does (the hex after the last "-" of the file
name is a prefix of the digest), converts it without PyTorch and saves it with
`bcos_jax.models.save` as `$BCOS_JAX_CACHE/<name>/` (default
`~/.cache/bcos_jax/<name>/`); later calls load that directory and never touch
the network. `$BCOS_JAX_WEIGHTS_URL` replaces `BASE_URL`: a mirror, or
`file:///shared/weights` on a cluster without internet.

Downloads and conversions go to hidden temporary names in the cache directory
and are renamed into place only when complete, so an interrupted or corrupt
download never leaves a cache entry, and two calls at once cannot mix files.
"""

import dataclasses
import difflib
import hashlib
import http.client
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import BinaryIO

import tqdm
from flax import nnx

from bcos_jax import console
from bcos_jax.errors import UserError
from bcos_jax.models import registry, saving

BASE_URL = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
CACHE_ENV, URL_ENV = "BCOS_JAX_CACHE", "BCOS_JAX_WEIGHTS_URL"
DEFAULT_CACHE = "~/.cache/bcos_jax"
SOURCE_FILE = "source.json"  # beside the saved model: which release file it was converted from

# Registry (= torch.hub) name -> release file, as the official bcos/models/pretrained.py
# (B-cos/B-cos-v2 @ 9a849c9) maps its entrypoints to `URLS[base_network][experiment]`.
WEIGHTS: dict[str, str] = {
    # bcos_final
    "resnet18": "resnet_18-68b4160fff.pth",
    "resnet34": "resnet_34-a63425a03e.pth",
    "resnet50": "resnet_50-ead259efe4.pth",
    "resnet101": "resnet_101-84c3658278.pth",
    "resnet152": "resnet_152-42051a77c1.pth",
    "resnext50_32x4d": "resnext_50_32x4d-57af241ab9.pth",
    "densenet121": "densenet_121-b8daf96afb.pth",
    "densenet161": "densenet_161-9e9ea51353.pth",
    "densenet169": "densenet_169-7037ee0604.pth",
    "densenet201": "densenet_201-00ac87066f.pth",
    "vgg11_bnu": "vgg_11_bnu-34036029f0.pth",
    # bcos_final_long (the hub's convnext_tiny/convnext_base are the "_pn" experiments)
    "convnext_tiny": "convnext_tiny_pn-539b1bfb37.pth",
    "convnext_base": "convnext_base_pn-b0495852c6.pth",
    "convnext_tiny_bnu": "convnext_tiny_bnu-dbd7f5ef9d.pth",
    "convnext_base_bnu": "convnext_base_bnu-7c32a704b3.pth",
    "densenet121_long": "densenet_121_long-5175461597.pth",
    "resnet50_long": "resnet_50_long-ef38a88533.pth",
    "resnet152_long": "resnet_152_long-0b4b434939.pth",
    # vit_final, B-cos
    "simple_vit_ti_patch16_224": "bcos_simple_vit_ti_patch16_224-4b0824b1c1.pth",
    "simple_vit_s_patch16_224": "bcos_simple_vit_s_patch16_224-75e99d1f73.pth",
    "simple_vit_b_patch16_224": "bcos_simple_vit_b_patch16_224-1fc4750806.pth",
    "simple_vit_l_patch16_224": "bcos_simple_vit_l_patch16_224-9613b2ad0a.pth",
    "vitc_ti_patch1_14": "bcos_vitc_ti_patch1_14-ddd6193a77.pth",
    "vitc_s_patch1_14": "bcos_vitc_s_patch1_14-cf55c88f0c.pth",
    "vitc_b_patch1_14": "bcos_vitc_b_patch1_14-a13c46397b.pth",
    "vitc_l_patch1_14": "bcos_vitc_l_patch1_14-8739e18b8d.pth",
    # vit_final, conventional baselines
    "standard_simple_vit_ti_patch16_224": "standard_simple_vit_ti_patch16_224-2ae8c65a39.pth",
    "standard_simple_vit_s_patch16_224": "standard_simple_vit_s_patch16_224-f2934fcdcf.pth",
    "standard_simple_vit_b_patch16_224": "standard_simple_vit_b_patch16_224-87074200ed.pth",
    "standard_simple_vit_l_patch16_224": "standard_simple_vit_l_patch16_224-62dc536e03.pth",
    "standard_vitc_ti_patch1_14": "standard_vitc_ti_patch1_14-a5d6bded37.pth",
    "standard_vitc_s_patch1_14": "standard_vitc_s_patch1_14-34ecd7288e.pth",
    "standard_vitc_b_patch1_14": "standard_vitc_b_patch1_14-4d374b0220.pth",
    "standard_vitc_l_patch1_14": "standard_vitc_l_patch1_14-560e48f246.pth",
}

_CHUNK = 1 << 20
_TIMEOUT_S = 60  # per socket operation: a stalled server fails instead of hanging forever


class NoPretrainedWeightsError(UserError):
  """A name without released weights (unknown, or a model nobody released weights for)."""


class DownloadError(UserError):
  """The release file could not be fetched completely (no network, HTTP error, cut off)."""


class HashMismatchError(DownloadError):
  """The downloaded bytes are not the released file."""


class CacheError(UserError):
  """The cache entry's path holds something other than the model it should."""


@dataclasses.dataclass(frozen=True)
class Download:
  """What arrived: its size, its SHA-256 (hex) and how long it took."""
  size: int
  sha256: str
  seconds: float


def available() -> list[str]:
  """The names `pretrained` can load, sorted."""
  return sorted(WEIGHTS)


def release_file(name: str) -> str:
  """The release file name of `name`'s official weights.

  Raises:
    NoPretrainedWeightsError: listing the names that have weights, with a close match.
  """
  if name in WEIGHTS:
    return WEIGHTS[name]
  close = difflib.get_close_matches(name, WEIGHTS, n=1)
  hint = f"; did you mean {close[0]!r}?" if close else "."
  what = ("has no weights in the B-cos v2 release (convert a checkpoint of it with python -m "
          "bcos_jax.convert, or train it)" if name in registry.names() else "is not a model")
  raise NoPretrainedWeightsError(f"{name!r} {what}{hint} Models with official weights: "
                                 f"{', '.join(available())}")


def cache_dir() -> pathlib.Path:
  """The cache root: `$BCOS_JAX_CACHE`, or `~/.cache/bcos_jax`."""
  return pathlib.Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser().absolute()


def url(name: str) -> str:
  """Where `name`'s release file is downloaded from (`$BCOS_JAX_WEIGHTS_URL` or `BASE_URL`)."""
  base = os.environ.get(URL_ENV) or BASE_URL
  return f"{base.rstrip('/')}/{release_file(name)}"


def hash_prefix(file_name: str) -> str:
  """The SHA-256 prefix a release file name carries, as torch.hub's `check_hash` reads it:
  the hex after the last "-" of the stem ("resnet_50-ead259efe4.pth" -> "ead259efe4")."""
  stem = file_name.split(".", 1)[0]
  prefix = stem.rpartition("-")[2] if "-" in stem else ""
  if not prefix or any(c not in "0123456789abcdef" for c in prefix):
    raise ValueError(f"{file_name!r} carries no SHA-256 prefix (NAME-<hex>.pth)")
  return prefix


def _size(n: float) -> str:
  """A byte count for people: "812 B", "39.8 KiB", "97.8 MiB", "1.2 GiB"."""
  if n < 1024:
    return f"{n:.0f} B"
  for unit in ("KiB", "MiB"):
    n /= 1024
    if n < 1024:
      return f"{n:.1f} {unit}"
  return f"{n / 1024:.1f} GiB"


def _manual_route(name: str) -> str:
  return (f"download it by other means and convert it: python -m bcos_jax.convert --model "
          f"{name} --torch_checkpoint FILE --out DIR (or set {URL_ENV} to a mirror)")


def _read(response, source: str, received: int) -> bytes:
  try:
    return response.read(_CHUNK)
  except (OSError, http.client.HTTPException) as error:
    raise DownloadError(f"the download of {source} broke after {received:,} bytes "
                        f"({error!r})") from error


def download(source: str, destination: BinaryIO, *, progress: bool | None = None) -> Download:
  """Streams `source` (http(s):// or file://) into `destination`, hashing as it goes.

  Args:
    source: the URL.
    destination: a binary file open for writing.
    progress: show a progress bar (size, speed) on stderr; None: only on a terminal.

  Raises:
    DownloadError: no connection, an HTTP error, or fewer bytes than the server announced.
  """
  start = time.perf_counter()
  try:
    response = urllib.request.urlopen(source, timeout=_TIMEOUT_S)
  except urllib.error.HTTPError as error:
    raise DownloadError(f"{source}: HTTP {error.code} {error.reason}") from error
  except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
    reason = getattr(error, "reason", error)
    raise DownloadError(f"could not reach {source} ({reason})") from error
  digest, received = hashlib.sha256(), 0
  with response:
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    bar = tqdm.tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                    desc=source.rsplit("/", 1)[-1], file=sys.stderr, dynamic_ncols=True,
                    disable=None if progress is None else not progress)
    with bar:
      while chunk := _read(response, source, received):
        destination.write(chunk)
        digest.update(chunk)
        received += len(chunk)
        bar.update(len(chunk))
  # http.client returns b"" when the server closes early, whatever Content-Length said.
  if expected is not None and received != expected:
    raise DownloadError(f"the download of {source} stopped after {received:,} of "
                        f"{expected:,} bytes (the connection closed)")
  return Download(received, digest.hexdigest(), time.perf_counter() - start)


def check_hash(file_name: str, digest: str, source: str) -> None:
  """torch.hub's `check_hash`: the name's hex must begin the file's SHA-256.

  Raises:
    HashMismatchError: naming the expected prefix and the actual digest.
  """
  prefix = hash_prefix(file_name)
  if not digest.startswith(prefix):
    raise HashMismatchError(f"{source} is not the released file: its SHA-256 is {digest}, "
                            f"the release's begins with {prefix}; nothing was cached, try again")


def _convert(name: str, path: pathlib.Path) -> nnx.Module:
  # Imported here: bcos_jax.convert builds on bcos_jax.models, which imports this module.
  from bcos_jax.convert import from_torch_state_dict  # noqa: PLC0415
  from bcos_jax.convert.torch_files import state_dict_from_file  # noqa: PLC0415
  return from_torch_state_dict(name, state_dict_from_file(path))


def _is_saved_model(directory: pathlib.Path) -> bool:
  return (directory / saving.MODEL_CONFIG_FILE).is_file()


def publish(partial: pathlib.Path, entry: pathlib.Path) -> None:
  """Renames the complete directory `partial` to `entry` (atomic on one file system).

  When another call filled `entry` first, its model (the same weights) is kept and
  `partial` removed.

  Raises:
    CacheError: when `entry` exists and holds no saved model.
  """
  try:
    os.rename(partial, entry)  # replaces an empty directory, never a filled one
  except OSError as error:
    if not _is_saved_model(entry):
      raise CacheError(f"{entry} exists but holds no saved model; remove it and call "
                       "again") from error
    shutil.rmtree(partial, ignore_errors=True)


def _save_entry(model: nnx.Module, entry: pathlib.Path, source: dict) -> None:
  partial = pathlib.Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.",
                                          suffix=".partial"))
  try:
    saving.save(model, partial)
    (partial / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    publish(partial, entry)
  finally:  # an interrupted save leaves no half entry (the rename moved a complete one)
    shutil.rmtree(partial, ignore_errors=True)


def _load_cached(name: str, entry: pathlib.Path) -> nnx.Module:
  model = saving.load(entry)
  if model.config.name != name:
    raise CacheError(f"the cache entry {entry} holds {model.config.name!r}, not {name!r}; "
                     "remove it and call again")
  return model


def _fetch(name: str, entry: pathlib.Path, progress: bool | None) -> nnx.Module:
  """Downloads, verifies and converts `name`'s release file, then fills `entry`."""
  file_name, source = release_file(name), url(name)
  try:
    entry.parent.mkdir(parents=True, exist_ok=True)
    # In the cache directory: the same file system as the entry, and never mistaken for one.
    fd, download_path = tempfile.mkstemp(dir=entry.parent, prefix=f".{file_name}.",
                                         suffix=".download")
  except OSError as error:  # e.g. a read-only home directory on a cluster
    raise CacheError(f"cannot write to the cache {entry.parent} ({error}); set {CACHE_ENV} "
                     "to a writable directory") from error
  if progress is not False:
    console.say(f"downloading {source} into {entry.parent}")
  try:
    with os.fdopen(fd, "wb") as destination:
      got = download(source, destination, progress=progress)
    check_hash(file_name, got.sha256, source)
    model = _convert(name, pathlib.Path(download_path))
  except HashMismatchError:
    raise
  except DownloadError as error:
    raise DownloadError(f"{error}; {_manual_route(name)}") from error
  finally:  # the arrays are in memory now, or the download failed: the file is not needed
    pathlib.Path(download_path).unlink(missing_ok=True)
  _save_entry(model, entry, {"url": source, "file": file_name, "sha256": got.sha256,
                             "bytes": got.size})
  if progress is not False:
    rate = got.size / max(got.seconds, 1e-9)
    console.say(f"{name}: {_size(got.size)} in {got.seconds:.2f} s ({_size(rate)}/s), "
                f"SHA-256 verified, converted into {entry}")
  return model


def pretrained(name: str, *, progress: bool | None = None) -> nnx.Module:
  """The official B-cos v2 model `name` with its released weights, in evaluation mode.

  Args:
    name: a hub name with released weights (`available()`), e.g. "resnet50".
    progress: the download's progress bar on stderr; None: only on a terminal. False
      also silences the two lines a download prints.

  Returns:
    The model, from the cache entry `cache_dir() / name` when there is one (no network),
    otherwise downloaded, verified, converted and cached first.

  Raises:
    NoPretrainedWeightsError: for a name without released weights.
    DownloadError: no network, an HTTP error, or a download cut short (nothing cached).
    HashMismatchError: the bytes are not the released file (nothing cached).
    CacheError: the cache entry holds something else.
  """
  release_file(name)  # an unknown name fails before anything touches the disk
  entry = cache_dir() / name
  if _is_saved_model(entry):
    return _load_cached(name, entry)
  return _fetch(name, entry, progress)
