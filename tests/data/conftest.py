"""Fixtures for the data tests: real images (scikit-image's samples) and datasets built here."""

import pathlib

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def sample_images() -> dict[str, np.ndarray]:
  """Real photographs shipped with scikit-image, as uint8 RGB."""
  import skimage.data

  return {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
          "chelsea": skimage.data.chelsea()}


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory, sample_images) -> pathlib.Path:
  """ROOT/<split>/<class>/<n>.jpg with three classes (one per sample image)."""
  root = tmp_path_factory.mktemp("image_folder")
  for split, count in (("train", 4), ("test", 2)):
    for name, image in sample_images.items():
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        shifted = np.roll(image, 17 * i, axis=1)
        Image.fromarray(shifted).resize((500, 375)).save(folder / f"{i}.jpg", quality=90)
  return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A data directory shared by the session (the digits dataset is built once)."""
  return str(tmp_path_factory.mktemp("tfds"))
