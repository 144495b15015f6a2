"""Reading PyTorch checkpoint files into NumPy without PyTorch.

Three layouts exist:
- zip (torch.save since PyTorch 1.6): `<root>/data.pkl` plus one raw file
  per storage under `<root>/data/`;
- legacy torch.save: a magic number, a protocol version and system info
  (three small pickles), the object pickle, the list of storage keys, then
  each storage's raw bytes (an 8-byte element count first);
- a plain `pickle.dump` of tensors (the v1 `state_dict.pkl`): each storage
  is a `torch.storage._load_from_bytes` call on a torch.save of it.
In all of them tensors are pickled as `torch._utils._rebuild_tensor_v2` on
storages. This reader rebuilds them as NumPy arrays and refuses every other
global, so a checkpoint cannot run code.
"""

import collections
import dataclasses
import io
import pathlib
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from bcos_jax.errors import UserError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": np.uint16,  # widened to float32 when rebuilt
}


class TorchFileError(UserError):
  """The file is not a readable PyTorch checkpoint."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str


@dataclasses.dataclass(frozen=True)
class _Storage:
  """A storage by key; its bytes are looked up when tensors are built."""
  key: str
  type_name: str


@dataclasses.dataclass(frozen=True)
class _Tensor:
  storage: Any  # a _Storage, or a NumPy array already read (plain pickles)
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, *unused) -> _Tensor:
  del unused
  return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  del unused
  return data


def _dtype(type_name: str) -> np.dtype:
  if type_name not in _STORAGE_DTYPES:
    raise TorchFileError(f"unsupported storage type {type_name}")
  return np.dtype(_STORAGE_DTYPES[type_name])


def _to_array(tensor: _Tensor, storage: np.ndarray, type_name: str) -> np.ndarray:
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[tensor.offset:], shape=tensor.size,
                                         strides=tuple(s * itemsize for s in tensor.stride))
  array = np.array(view, order="C")  # owns its memory, C-contiguous
  if type_name == "BFloat16Storage":
    array = (array.astype(np.uint32) << 16).view(np.float32)
  return array


def _resolve(obj, read_storage: Callable[[_Storage], np.ndarray]):
  """Replaces every _Tensor in nested dicts/lists/tuples by its NumPy array."""
  if isinstance(obj, _Tensor):
    if isinstance(obj.storage, tuple):  # (array, type name) from a plain pickle
      return _to_array(obj, *obj.storage)
    return _to_array(obj, read_storage(obj.storage), obj.storage.type_name)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, read_storage)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, read_storage) for v in obj)
  return obj


def _storage_from_bytes(data: bytes):
  """`torch.storage._load_from_bytes`: a torch.save of one storage."""
  obj = _load_bytes(data)
  if not (isinstance(obj, tuple) and len(obj) == 2):
    raise TorchFileError("an embedded storage did not hold a storage")
  return obj


class _Unpickler(pickle.Unpickler):
  _ALLOWED = {
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch", "device"): str,
      ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
  }

  def find_class(self, module: str, name: str):
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise TorchFileError(f"the checkpoint refers to {module}.{name}, which a state dict "
                         "does not need; refusing to load it (it could run code)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchFileError(f"unknown persistent id {pid!r}")
    storage_type = pid[1]
    name = storage_type.name if isinstance(storage_type, _StorageType) else str(storage_type)
    _dtype(name)  # unsupported types fail here, with their name
    return _Storage(str(pid[2]), name)


def _load_zip(archive: zipfile.ZipFile) -> Any:
  pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
  if not pickles:
    raise TorchFileError("a zip file without data.pkl: not a PyTorch checkpoint")
  root = pickles[0][: -len("data.pkl")]
  obj = _Unpickler(io.BytesIO(archive.read(pickles[0]))).load()

  def read(storage: _Storage) -> np.ndarray:
    return np.frombuffer(archive.read(f"{root}data/{storage.key}"), _dtype(storage.type_name))

  if isinstance(obj, _Storage):  # torch.save of a bare storage (_load_from_bytes)
    return read(obj), obj.type_name
  return _resolve(obj, read)


def _load_pickled(f) -> Any:
  """A legacy torch.save, or a plain pickle of tensors (whose storages are embedded)."""
  first = _Unpickler(f).load()
  if first != _LEGACY_MAGIC:
    return _resolve(first, _no_storage)
  _Unpickler(f).load()  # protocol version
  _Unpickler(f).load()  # system info
  obj = _Unpickler(f).load()
  keys = _Unpickler(f).load()
  types = {}

  def note(o):
    if isinstance(o, _Tensor) and isinstance(o.storage, _Storage):
      types[o.storage.key] = o.storage.type_name
    elif isinstance(o, _Storage):
      types[o.key] = o.type_name
    elif isinstance(o, dict):
      for v in o.values():
        note(v)
    elif isinstance(o, (list, tuple)):
      for v in o:
        note(v)

  note(obj)
  storages = {}
  for key in keys:
    (count,) = struct.unpack("<q", f.read(8))
    dtype = _dtype(types.get(key, "ByteStorage"))
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
      raise EOFError(f"storage {key} is cut short")
    storages[key] = np.frombuffer(data, dtype)
  if isinstance(obj, _Storage):
    return storages[obj.key], obj.type_name
  return _resolve(obj, lambda s: storages[s.key])


def _load_bytes(data: bytes) -> Any:
  buffer = io.BytesIO(data)
  if zipfile.is_zipfile(buffer):
    with zipfile.ZipFile(buffer) as archive:
      return _load_zip(archive)
  buffer.seek(0)
  return _load_pickled(buffer)


def load(path: str | pathlib.Path) -> Any:
  """Loads a PyTorch checkpoint (any of the three layouts) with NumPy arrays for tensors.

  Raises:
    TorchFileError: for a missing, truncated or non-PyTorch file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise TorchFileError(f"{path} does not exist")
  data = path.read_bytes()
  try:
    if zipfile.is_zipfile(io.BytesIO(data)):
      return _load_bytes(data)
    if data[:1] == b"\x80":  # a pickle: a legacy torch.save, or a plain pickle of tensors
      return _load_pickled(io.BytesIO(data))
    raise TorchFileError(f"{path} is not a PyTorch checkpoint")
  except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, struct.error,
          IndexError) as error:
    raise TorchFileError(f"{path} is truncated or not a PyTorch checkpoint ({error})") from error


def _no_storage(storage: _Storage) -> np.ndarray:
  raise TorchFileError(f"storage {storage.key} is referenced but not in the file")


def state_dict_from_file(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """The state dict in a checkpoint: the file itself, or its "state_dict"/"model" entry."""
  obj = load(path)
  for key in ("state_dict", "model", "model_state_dict"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise TorchFileError(f"{path} holds no state dict (a mapping of names to tensors)")
  # Checkpoints saved from DataParallel prefix every key with "module.".
  if obj and all(k.startswith("module.") for k in obj):
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
  return dict(obj)
