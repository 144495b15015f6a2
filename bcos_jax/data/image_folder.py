"""Your own images as a tfds ArrayRecord dataset, prepared without TensorFlow.

Layout: ROOT/<split>/<class name>/<image file> with JPEG or PNG files, e.g.
ROOT/train/cat/001.jpg and ROOT/test/dog/042.png. Class names are sorted
alphabetically to give the labels, and every split must have the same
classes. The files' bytes are stored unchanged (no re-encoding); the
pipeline decodes them.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from bcos_jax.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageFolderNotFoundError(UserError, FileNotFoundError):
  """The image folder to prepare does not exist."""


def scan(root: str | pathlib.Path) -> tuple[list[str], dict[str, list[tuple[pathlib.Path, int]]]]:
  """The class names and, per split, the (file, label) pairs under `root`.

  Raises:
    FileNotFoundError / ValueError: for a missing root, no splits, empty or
      mismatched classes, naming what is wrong.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise ImageFolderNotFoundError(f"image folder {root} does not exist: give the folder "
                                   "that holds <split>/<class>/<images>")
  splits = sorted(p for p in root.iterdir() if p.is_dir())
  if not splits:
    raise UserError(f"{root} has no split folders: expected {root}/train/<class>/<images>")
  classes_by_split = {s.name: sorted(p.name for p in s.iterdir() if p.is_dir()) for s in splits}
  classes = classes_by_split[splits[0].name]
  for split, names in classes_by_split.items():
    if names != classes:
      raise UserError(f"split {split!r} has classes {names}, but {splits[0].name!r} has "
                       f"{classes}: every split needs the same class folders")
  if not classes:
    raise UserError(f"{splits[0]} has no class folders")
  files = {}
  for split in splits:
    files[split.name] = [(path, label) for label, name in enumerate(classes)
                         for path in sorted((split / name).iterdir())
                         if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files[split.name]:
      raise UserError(f"split {split.name!r} has no {'/'.join(IMAGE_SUFFIXES)} files")
  return classes, files


def make_builder(name: str, root: str | pathlib.Path, data_dir: str) -> tfds.core.DatasetBuilder:
  """A tfds builder for the image folder `root`, named `name` under `data_dir`."""
  classes, files = scan(root)

  class ImageFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description=f"Images from {root}.",
          features=tfds.features.FeaturesDict({
              # Encoded bytes, as in the file: decoding needs no TensorFlow.
              "image": tfds.features.Tensor(shape=(), dtype=np.object_),
              "label": tfds.features.ClassLabel(names=classes),
              "file_name": tfds.features.Text(),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(pairs) for split, pairs in files.items()}

    def _generate_examples(self, pairs):
      for path, label in pairs:
        with Image.open(path) as image:
          image.verify()  # a corrupt file fails here, with its name
        yield str(path), {"image": path.read_bytes(), "label": label, "file_name": path.name}

  ImageFolderBuilder.name = name
  return ImageFolderBuilder(data_dir=data_dir, file_format="array_record")


def prepare(name: str, root: str | pathlib.Path, data_dir: str) -> pathlib.Path:
  """Prepares the image folder as dataset `name`; returns where it was written."""
  builder = make_builder(name, root, data_dir)
  builder.download_and_prepare()
  return pathlib.Path(builder.data_dir)
