"""Decoding of encoded images (JPEG, PNG) with PIL, at reduced size when allowed."""

import io

import numpy as np
from PIL import Image


def open_image(image) -> Image.Image:
  """A PIL image from encoded bytes or a uint8 HWC array (not yet decoded for bytes)."""
  if isinstance(image, (bytes, np.bytes_)):
    return Image.open(io.BytesIO(bytes(image)))
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3):
    raise ValueError(f"images must be encoded bytes or uint8 (H, W, 1|3) arrays, got "
                     f"{array.dtype} {array.shape}")
  return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def to_rgb_array(image: Image.Image) -> np.ndarray:
  """uint8 (H, W, 3)."""
  if image.mode != "RGB":
    image = image.convert("RGB")
  return np.asarray(image)


def draft_for_box(image: Image.Image, box_size: tuple[float, float],
                  target_size: tuple[int, int]) -> float:
  """Lets a JPEG decode at 1/2, 1/4 or 1/8 size when the crop stays larger than the target.

  Args:
    image: an opened, not yet decoded image.
    box_size: (width, height) of the crop in the full-size image.
    target_size: (width, height) the crop will be resized to.

  Returns:
    The scale factor the image was reduced by (1.0 when no reduction).
  """
  if image.format != "JPEG":
    return 1.0
  # The largest power-of-two reduction that keeps the crop >= the target size.
  reduction = min(box_size[0] / target_size[0], box_size[1] / target_size[1])
  scale = 1
  while scale * 2 <= min(reduction, 8):
    scale *= 2
  if scale == 1:
    return 1.0
  full = image.size
  image.draft("RGB", (full[0] // scale, full[1] // scale))
  return image.size[0] / full[0]
