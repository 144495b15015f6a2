"""Decoding of encoded images (JPEG, PNG), at reduced size when the crop allows it.

Training crops decode with OpenCV straight into a NumPy array (the same
libjpeg-turbo numbers as PIL, without PIL's conversion to an array); the
evaluation transforms open the image with PIL, whose antialiased resize
they follow as torchvision does.
"""

import io

import cv2
import numpy as np
from PIL import Image

_JPEG_MAGIC = b"\xff\xd8"
# OpenCV's flags for decoding at 1/1, 1/2, 1/4, 1/8 of the size, in RGB order, ignoring
# the EXIF orientation as PIL (and so torchvision) does.
_CV2_REDUCED = {reduction: flag | cv2.IMREAD_COLOR_RGB for reduction, flag in (
    (1, 0), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8))}  # the reduction bits, in colour


def _is_encoded(image) -> bool:
  return isinstance(image, (bytes, np.bytes_))


def open_image(image) -> Image.Image:
  """A PIL image from encoded bytes or a uint8 HWC array (not yet decoded for bytes)."""
  if _is_encoded(image):
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


def image_size(image) -> tuple[int, int]:
  """(width, height) of encoded bytes (read from the header), a PIL image or an HWC array."""
  if isinstance(image, Image.Image):
    return image.size
  if _is_encoded(image):
    return open_image(image).size
  shape = np.shape(image)
  return shape[1], shape[0]


def reduction_for_box(box_size: tuple[float, float], target_size: tuple[int, int]) -> int:
  """The largest of 1, 2, 4, 8 by which a box of `box_size` stays >= `target_size`."""
  reduction = min(box_size[0] / target_size[0], box_size[1] / target_size[1])
  scale = 1
  while scale * 2 <= min(reduction, 8):
    scale *= 2
  return scale


def decode_rgb(image, reduction: int = 1) -> np.ndarray:
  """uint8 (H, W, 3) from encoded bytes, a PIL image or an array.

  Args:
    image: encoded bytes, a PIL image or a uint8 (H, W, 1|3) array.
    reduction: 1, 2, 4 or 8; a JPEG is decoded at 1/reduction of its size (libjpeg's
      DCT scaling), other images at full size. Callers read the size from the result.

  Raises:
    ValueError: bytes that are not an image OpenCV can decode.
  """
  if isinstance(image, Image.Image):
    return to_rgb_array(image)
  if not _is_encoded(image):
    return to_rgb_array(open_image(image))
  data = bytes(image)
  flags = _CV2_REDUCED[reduction if data.startswith(_JPEG_MAGIC) else 1]
  pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
  if pixels is None:
    raise ValueError(f"could not decode an image from {len(data)} bytes starting "
                     f"{data[:8]!r}: records must hold JPEG or PNG files")
  return pixels


def draft_for_box(image: Image.Image, box_size: tuple[float, float],
                  target_size: tuple[int, int]) -> float:
  """Lets PIL decode a JPEG at 1/2, 1/4 or 1/8 size when the crop stays larger than the target.

  Args:
    image: an opened, not yet decoded image.
    box_size: (width, height) of the crop in the full-size image.
    target_size: (width, height) the crop will be resized to.

  Returns:
    The scale factor the image was reduced by (1.0 when no reduction).
  """
  scale = reduction_for_box(box_size, target_size)
  if image.format != "JPEG" or scale == 1:
    return 1.0
  full = image.size
  image.draft("RGB", (full[0] // scale, full[1] // scale))
  return image.size[0] / full[0]
