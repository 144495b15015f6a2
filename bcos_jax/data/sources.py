"""Random-access data sources: tfds ArrayRecord datasets, read without TensorFlow.

A source is a sequence of records `{"image": ..., "label": int}` where the
image is either a decoded uint8 HWC array or the encoded file bytes (JPEG or
PNG), decoded later by the pipeline (`bcos_jax.data.decode`), which can
decode JPEGs at reduced size when the crop allows it.
"""

import contextlib
import dataclasses
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from bcos_jax.errors import UserError

DEFAULT_DATA_DIR = os.environ.get("TFDS_DATA_DIR", str(pathlib.Path.home() / "tensorflow_datasets"))


class DatasetNotPreparedError(UserError, FileNotFoundError):
  """The dataset has not been prepared under the data directory."""


def prepare_command(name: str, data_dir: str) -> str:
  """The command that prepares dataset `name` under `data_dir`."""
  if name == "imagenet2012":
    return (f"python launch/prepare_data.py --dataset=imagenet2012 --data_dir={data_dir} "
            "--manual_dir=DIR_WITH_ILSVRC2012_img_train.tar_AND_ILSVRC2012_img_val.tar")
  return f"python launch/prepare_data.py --dataset={name} --data_dir={data_dir}"


@dataclasses.dataclass(frozen=True)
class Source:
  """A random-access dataset split: `len(source)` records, `source[i]` a dict."""
  records: Sequence[Mapping[str, Any]]
  num_classes: int
  name: str
  split: str
  class_names: Sequence[str] | None = None  # the dataset's names of the labels, if any

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self.records[index]
    return {"image": record["image"], "label": int(record["label"])}


def _num_classes(info) -> int:
  label = info.features["label"]
  return int(label.num_classes)


def _class_names(info) -> tuple[str, ...] | None:
  names = getattr(info.features["label"], "names", None)
  return tuple(names) if names else None


def jpeg_image_keys(features) -> list[str]:
  """Image features stored as JPEG: read as bytes, so the pipeline can decode
  them at reduced size (tfds decodes the others, with PIL, no TensorFlow)."""
  import tensorflow_datasets as tfds

  return [key for key, feature in features.items()
          if isinstance(feature, tfds.features.Image) and feature.encoding_format == "jpeg"]


@contextlib.contextmanager
def _quiet_tfds():
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _registered(name: str) -> bool:
  import tensorflow_datasets as tfds

  try:
    tfds.builder_cls(name.split(":")[0])
  except tfds.core.registered.DatasetNotFoundError:
    return False
  return True


def _not_prepared(name: str, split: str, data_dir: str) -> DatasetNotPreparedError:
  return DatasetNotPreparedError(
      f"dataset {name!r} (split {split!r}) is not prepared under data_dir={data_dir!r}. "
      f"Prepare it with:\n  {prepare_command(name, data_dir)}\n"
      "or point --config.data_dir (or $TFDS_DATA_DIR) at the folder that holds it.")


def _unknown(name: str, split: str, data_dir: str) -> DatasetNotPreparedError:
  del split
  return DatasetNotPreparedError(
      f"no dataset {name!r}: it is neither a tfds dataset nor prepared under "
      f"data_dir={data_dir!r}. Check the name, point --config.data_dir (or $TFDS_DATA_DIR) "
      "at the folder that holds it, or prepare your own images with:\n  "
      f"python launch/prepare_data.py --image_folder=ROOT --name={name} --data_dir={data_dir}")


def tfds_source(name: str, split: str, data_dir: str | None = None,
                decode_jpeg: bool = False) -> Source:
  """Opens a prepared tfds dataset (ArrayRecord) for random access.

  Args:
    name: the tfds name.
    split: e.g. "train", "test", "validation", "train[:90%]".
    data_dir: where tfds datasets live.
    decode_jpeg: let tfds decode JPEG images; by default their bytes are
      kept and the pipeline decodes them at the size its crop needs.

  Raises:
    DatasetNotPreparedError: with the command that prepares the dataset.
  """
  import tensorflow_datasets as tfds  # Slow import: only where a dataset is opened.

  data_dir = data_dir or DEFAULT_DATA_DIR
  absent = not (pathlib.Path(data_dir) / name.split(":")[0]).is_dir()
  try:
    with _quiet_tfds():  # its "no dataset_info.json" warnings say less than our errors
      builder = tfds.builder(name, data_dir=data_dir)
      decoders = {} if decode_jpeg else {
          key: tfds.decode.SkipDecoding() for key in jpeg_image_keys(builder.info.features)}
      records = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                 decoders=decoders or None)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise (_not_prepared if _registered(name) else _unknown)(name, split, data_dir) from error
  except NotImplementedError as error:  # prepared as TFRecord files, or not at all
    if absent:
      raise _not_prepared(name, split, data_dir) from error
    raise DatasetNotPreparedError(
        f"dataset {name!r} under data_dir={data_dir!r} is not in ArrayRecord format, which "
        f"random access (and bcos_jax) needs. Prepare it again with:\n  "
        f"{prepare_command(name, data_dir)}") from error
  except (FileNotFoundError, AssertionError) as error:
    raise _not_prepared(name, split, data_dir) from error
  except ValueError as error:
    splits = list(builder.info.splits)
    if not any(split.startswith(known) for known in splits):  # tfds: "Unknown split ..."
      raise UserError(f"dataset {name!r} has no split {split!r}; its splits are "
                      f"{', '.join(splits)} (set config.train_split / config.eval_split, "
                      "or --split)") from error
    raise
  return Source(records, _num_classes(builder.info), name, split, _class_names(builder.info))


@dataclasses.dataclass(frozen=True)
class _Relabelled(Sequence):
  """The records at `indices`, their labels mapped by `labels` (read on demand)."""
  records: Sequence[Mapping[str, Any]]
  indices: tuple[int, ...]
  labels: Mapping[int, int]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self.records[self.indices[index]]
    return {**record, "label": self.labels[int(record["label"])]}


def class_subset(source: Source, classes: Sequence[int]) -> Source:
  """The records of `classes` only, relabelled 0..k-1 in the order given, names kept.

  Finding them reads every record's label once (for a large dataset, once per run).

  Raises:
    UserError: for a label outside the dataset's, or one given twice.
  """
  classes = tuple(int(c) for c in classes)
  outside = [c for c in classes if not 0 <= c < source.num_classes]
  if outside or len(set(classes)) != len(classes):
    raise UserError(f"classes {classes} (config.classes): each must be a label of "
                    f"{source.name} (0..{source.num_classes - 1}), given once")
  labels = {c: new for new, c in enumerate(classes)}
  indices = tuple(i for i in range(len(source.records))
                  if int(source.records[i]["label"]) in labels)
  names = tuple(source.class_names[c] for c in classes) if source.class_names else None
  return Source(_Relabelled(source.records, indices, labels), len(classes), source.name,
                source.split, names)


def open_source(name: str, split: str, data_dir: str | None = None,
                classes: Sequence[int] = ()) -> Source:
  """Opens dataset `name`: the embedded digits data (built on first use) or a tfds dataset.

  Args:
    name, split, data_dir: which dataset split, and where it is prepared.
    classes: only these labels, relabelled 0..k-1 (`class_subset`); () = every class.
  """
  from bcos_jax.data import digits  # noqa: PLC0415  (avoids an import cycle)

  if name == digits.NAME:
    digits.ensure_prepared(data_dir or DEFAULT_DATA_DIR)
  source = tfds_source(name, split, data_dir)
  return class_subset(source, classes) if classes else source


def class_names(name: str, data_dir: str | None = None) -> tuple[str, ...] | None:
  """The label names of dataset `name` (None when it has none), as its tfds metadata gives them.

  For a dataset that tfds defines, the names ship with tfds, so nothing needs to be
  prepared: `class_names("imagenet2012")` gives the 1000 WordNet IDs ("n01440764",
  ...) that label the official B-cos v2 models' outputs.

  Raises:
    DatasetNotPreparedError: for a name that is neither a tfds dataset nor prepared.
  """
  from bcos_jax.data import digits  # noqa: PLC0415  (avoids an import cycle)

  if name == digits.NAME:
    return tuple(open_source(name, "test", data_dir).class_names)
  import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import: only where needed)

  data_dir = data_dir or DEFAULT_DATA_DIR
  try:
    with _quiet_tfds():
      info = tfds.builder(name, data_dir=data_dir).info
  except tfds.core.registered.DatasetNotFoundError as error:
    raise _unknown(name, "", data_dir) from error
  return _class_names(info)
