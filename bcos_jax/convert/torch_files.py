"""Reading PyTorch checkpoint files into NumPy without PyTorch, and writing state dicts.

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
global, so a checkpoint cannot run code. `save_state_dict` writes the zip
layout, so bcos_jax weights (`bcos_jax.convert.to_torch_state_dict`) load in
PyTorch with `torch.load`.
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


# -- Writing (the zip layout of torch.save).

_STORAGE_NAMES = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items() if k != "BFloat16Storage"}
_ALIGNMENT = 64  # torch aligns every record's bytes, so that files can be memory-mapped


def _pickle_unicode(text: str) -> bytes:
  data = text.encode("utf-8")
  return b"X" + struct.pack("<I", len(data)) + data


def _pickle_int(value: int) -> bytes:
  if 0 <= value < 2**31:
    return b"J" + struct.pack("<i", value)
  data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
  return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _pickle_int_tuple(values: tuple[int, ...]) -> bytes:
  return b"(" + b"".join(_pickle_int(v) for v in values) + b"t"


def _state_dict_pickle(arrays: dict[str, np.ndarray]) -> bytes:
  """The pickle torch.save writes for a state dict: an OrderedDict of
  `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, storages
  as persistent ids ("storage", <type>, key, "cpu", numel). Written opcode by
  opcode, since the globals it names are PyTorch's."""
  ordered_dict = b"ccollections\nOrderedDict\n)R"
  out = [b"\x80\x02", ordered_dict]
  for index, (key, value) in enumerate(arrays.items()):
    strides = tuple(s // value.itemsize for s in value.strides) if value.ndim else ()
    storage_id = (b"(" + _pickle_unicode("storage") + b"ctorch\n"
                  + _STORAGE_NAMES[value.dtype].encode() + b"\n" + _pickle_unicode(str(index))
                  + _pickle_unicode("cpu") + _pickle_int(max(value.size, 1)) + b"tQ")
    out += [_pickle_unicode(key), b"ctorch._utils\n_rebuild_tensor_v2\n(", storage_id,
            _pickle_int(0), _pickle_int_tuple(value.shape), _pickle_int_tuple(strides),
            b"\x89", ordered_dict, b"tRs"]
  out.append(b".")
  return b"".join(out)


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
  """A stored record whose bytes start at a multiple of `_ALIGNMENT` (padding in the local
  header's extra field, as torch's writer does)."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  header_end = archive.fp.tell() + 30 + len(name.encode()) + 4
  padding = -header_end % _ALIGNMENT
  info.extra = struct.pack("<HH", 0x4246, padding) + b"Z" * padding  # id "FB", as torch
  archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def save_state_dict(state_dict: dict[str, np.ndarray], path: str | pathlib.Path) -> None:
  """Writes `state_dict` (name -> NumPy array) as torch.save does (zip layout).

  Args:
    state_dict: e.g. `bcos_jax.convert.to_torch_state_dict(model)`.
    path: the `.pth` file to write.

  Raises:
    UserError: for an array of a dtype PyTorch storages do not have.
  """
  arrays = {}
  for key, value in state_dict.items():
    value = np.asarray(value)
    value = value if value.flags.c_contiguous else value.copy(order="C")  # keeps 0-d arrays
    if value.dtype not in _STORAGE_NAMES:
      raise UserError(f"{key}: dtype {value.dtype} has no PyTorch storage type")
    arrays[key] = value
  root = pathlib.Path(path).stem or "archive"
  path = pathlib.Path(path)
  partial = path.with_name(path.name + ".partial")
  with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
    _write_aligned(archive, f"{root}/data.pkl", _state_dict_pickle(arrays))
    _write_aligned(archive, f"{root}/byteorder", b"little")
    for index, value in enumerate(arrays.values()):
      _write_aligned(archive, f"{root}/data/{index}", value.astype(value.dtype.newbyteorder("<"),
                                                                    copy=False).tobytes())
    _write_aligned(archive, f"{root}/version", b"3\n")
  partial.replace(path)  # never a half-written checkpoint under the real name
