"""Image files (JPEG, PNG, ... of any size and mode) as a model's evaluation sees its data.

A file goes through the evaluation transform of a preprocessing recipe
(`bcos_jax.data.recipes`), exactly as a dataset record of the same bytes would:
e.g. `bcos_final` resizes the shorter side to 256 and crops the centre 224.
The small-image recipes (`digits`, `cifar10`) keep their dataset's size and
do not resize, so a file of another size is then fitted to the recipe's
image size the same way (shorter side, centre crop). Grey images become
three equal channels and an alpha channel is dropped (PIL's conversion to RGB).
"""

import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from bcos_jax.data import recipes
from bcos_jax.errors import UserError

# For a saved or pretrained model, whose directory does not record its preprocessing:
# the B-cos v2 ImageNet evaluation (resize 256, centre crop 224).
DEFAULT_RECIPE = "bcos_final"


def _read(path: pathlib.Path) -> bytes:
  if path.is_dir():
    raise UserError(f"{str(path)!r} is a directory, not an image file")
  if not path.is_file():
    raise UserError(f"image file {str(path)!r} does not exist")
  return path.read_bytes()


def _fit(image: np.ndarray, size: int) -> np.ndarray:
  """The centre square of `image`, resized to size×size (PIL's antialiased bilinear)."""
  height, width = image.shape[:2]
  side = min(height, width)
  left, top = (width - side) // 2, (height - side) // 2
  box = (left, top, left + side, top + side)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box))


def load_image(path: str | pathlib.Path, recipe: str = DEFAULT_RECIPE) -> np.ndarray:
  """uint8 (S, S, 3): an image file after `recipe`'s evaluation transform, S its image size.

  Raises:
    UserError: for a missing file, one that is not an image PIL can read, or
      an unknown recipe.
  """
  found = recipes.get_recipe(recipe)
  path = pathlib.Path(path)
  try:
    image = found.eval({"image": _read(path), "label": 0})["image"]
  except Image.UnidentifiedImageError as error:
    raise UserError(f"{str(path)!r} is not an image file that PIL can read (JPEG, PNG, "
                    "...)") from error
  except OSError as error:  # e.g. a truncated file
    raise UserError(f"image file {str(path)!r} could not be decoded: {error}") from error
  size = found.image_size
  return image if image.shape[:2] == (size, size) else _fit(image, size)


def load_images(paths: Sequence[str | pathlib.Path], recipe: str = DEFAULT_RECIPE) -> np.ndarray:
  """uint8 (N, S, S, 3): `load_image` of each file, ready for `models.input_transform`."""
  if not paths:
    raise UserError("no image files given")
  return np.stack([load_image(path, recipe) for path in paths])
