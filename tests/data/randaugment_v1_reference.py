"""The v1 code's RandAugment ops applied literally, to the whole PIL image: the test oracle.

As the official code (ildoonet/pytorch-randaugment): PIL ops on the full
photograph, nearest resampling and black fill for the geometric ops, then
the crop. `bcos_jax.data.randaugment_v1` must give the same images up to
resampling.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from bcos_jax.data.randaugment_v1 import CUTOUT_COLOUR, Op

_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}


def _affine(image: Image.Image, matrix) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix)  # black fill, nearest


def apply_op(image: Image.Image, op: Op) -> Image.Image:
  """One drawn op (value signed, cutout square placed) on the whole image."""
  name, v = op.name, op.value
  if name == "auto_contrast":
    return ImageOps.autocontrast(image)
  if name == "equalize":
    return ImageOps.equalize(image)
  if name == "invert":
    return ImageOps.invert(image)
  if name == "rotate":
    return image.rotate(v)
  if name == "posterize":
    return ImageOps.posterize(image, max(1, int(v)))
  if name == "solarize":
    return ImageOps.solarize(image, v)
  if name == "solarize_add":
    shifted = np.clip(np.asarray(image, np.int32) + int(v), 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), 128)
  if name in _ENHANCERS:
    return _ENHANCERS[name](image).enhance(v)
  if name == "shear_x":
    return _affine(image, (1, v, 0, 0, 1, 0))
  if name == "shear_y":
    return _affine(image, (1, 0, 0, v, 1, 0))
  if name == "translate_x":
    return _affine(image, (1, 0, v, 0, 1, 0))
  if name == "translate_y":
    return _affine(image, (1, 0, 0, 0, 1, v))
  if name == "cutout":
    image = image.copy()
    ImageDraw.Draw(image).rectangle(op.square, CUTOUT_COLOUR)
    return image
  raise ValueError(f"unknown v1 op {name!r}")


def augment_crop(image: Image.Image, ops, box, out_size: int) -> np.ndarray:
  """The ops on the whole image, then the crop box resized (bilinear, antialiased)."""
  for op in ops:
    image = apply_op(image, op)
  left, top, w, h = box
  return np.asarray(image.resize((out_size, out_size), Image.BILINEAR,
                                 box=(left, top, left + w, top + h)))
