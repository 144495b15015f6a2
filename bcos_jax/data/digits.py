"""The embedded dataset: scikit-learn's handwritten digits as 32×32 RGB images.

1,797 real 8×8 grey images (values 0..16) of the digits 0-9 ship inside
scikit-learn, so the default run and the tests need no download. They are
upscaled to 32×32 (bilinear), scaled to 0..255 and repeated to RGB.

Split (fixed, documented): a permutation of the 1,797 indices by
`np.random.default_rng(0)`; the first 1,437 (80%) are `train`, the remaining
360 are `test`. The dataset is written as a tfds ArrayRecord dataset named
`bcos_digits` under the data directory on first use; no TensorFlow needed.
"""

import contextlib
import io
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from bcos_jax import console

NAME = "bcos_digits"
IMAGE_SIZE = 32
NUM_TRAIN = 1437
SPLIT_SEED = 0


def digits_images() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 digits as uint8 (N, 32, 32, 3) images and int64 labels."""
  from sklearn.datasets import load_digits  # Imported here: a dev/test dependency.

  digits = load_digits()
  images = []
  for grey in digits.images:  # (8, 8) floats in 0..16
    small = Image.fromarray(np.uint8(np.round(grey * (255 / 16))))
    large = np.asarray(small.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    images.append(np.repeat(large[..., None], 3, axis=-1))
  return np.stack(images), digits.target.astype(np.int64)


def split_indices() -> dict[str, np.ndarray]:
  """The fixed train/test split of the 1,797 images."""
  order = np.random.default_rng(SPLIT_SEED).permutation(1797)
  return {"train": np.sort(order[:NUM_TRAIN]), "test": np.sort(order[NUM_TRAIN:])}


class BcosDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's digits, 32×32 RGB, with bcos_jax's fixed 1437/360 split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # A raw tensor rather than tfds' Image: encoding PNGs needs TensorFlow.
            "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    images, labels = digits_images()
    return {split: self._generate_examples(images, labels, indices)
            for split, indices in split_indices().items()}

  def _generate_examples(self, images, labels, indices):
    for index in indices:
      yield int(index), {"image": images[index], "label": int(labels[index])}


def ensure_prepared(data_dir: str) -> None:
  """Writes the dataset under `data_dir` unless it is there already (a second, quietly)."""
  builder = BcosDigits(data_dir=data_dir, file_format="array_record")
  # Asked of the file, not of `builder.is_prepared()`, which logs a warning when absent.
  if not (pathlib.Path(builder.data_dir) / "dataset_info.json").is_file():
    # tfds' own progress bars and "downloaded and prepared" print would bury the
    # console of a first run; one line says what happened.
    with contextlib.redirect_stdout(io.StringIO()), _no_tfds_progress_bars():
      builder.download_and_prepare()
    console.say(f"prepared the digits dataset (1,437 train / 360 test images) in "
                f"{builder.data_dir}")


@contextlib.contextmanager
def _no_tfds_progress_bars():
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.enable_progress_bar()
