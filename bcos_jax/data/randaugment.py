"""torchvision's RandAugment and TrivialAugmentWide (the v2 recipes), on PIL crops.

`rand_augment` (used by the v2 ViT recipe) and `trivial_augment_wide`
(`bcos_final_long`) share torchvision's 14-op table on 31 magnitude bins;
signed ops flip sign with p = 0.5. Both run on the crop, as in the v2 code.
The v1 recipe's RandAugment, which runs on the whole photograph, is
`randaugment_v1`.
"""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

NUM_BINS = 31  # torchvision's magnitude bins (0..30)

_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}


def _sign(rng: np.random.Generator) -> float:
  return -1.0 if rng.uniform() < 0.5 else 1.0


def _affine(image: Image.Image, matrix) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix)  # black fill, nearest


# -- torchvision's RandAugment and TrivialAugmentWide ---------------------------------

OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
       "color", "contrast", "sharpness", "posterize", "solarize", "auto_contrast", "equalize")
_SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
           "contrast", "sharpness"}
# The top of each op's range. Translate: a fraction of the image size
# (150/331, torchvision's) or pixels ("wide": 32); posterize: bits removed.
_RANGES = {
    "torchvision": {"shear": 0.3, "translate": 150 / 331, "rotate": 30.0, "enhance": 0.9,
                    "posterize": 4},
    "wide": {"shear": 0.99, "translate": 32.0, "rotate": 135.0, "enhance": 0.99,
             "posterize": 6},
}


def _range(space: str, op: str) -> float:
  key = "enhance" if op in _ENHANCERS else op.split("_")[0]
  return _RANGES[space][key]


def apply_op(image: Image.Image, op: str, fraction: float, sign: float,
             space: str) -> Image.Image:
  """Applies `op` at `fraction` (0..1) of its range in `space` ("torchvision" or "wide")."""
  if op == "identity":
    return image
  if op == "auto_contrast":
    return ImageOps.autocontrast(image)
  if op == "equalize":
    return ImageOps.equalize(image)
  if op == "solarize":  # threshold from 255 (nothing) down to 0
    return ImageOps.solarize(image, threshold=255.0 * (1 - fraction))
  value = fraction * _range(space, op) * (sign if op in _SIGNED else 1.0)
  if op == "posterize":
    return ImageOps.posterize(image, 8 - int(round(value)))
  if op in _ENHANCERS:
    return _ENHANCERS[op](image).enhance(1.0 + value)
  if op == "rotate":
    return image.rotate(value)
  if op == "shear_x":
    return _affine(image, (1, value, 0, 0, 1, 0))
  if op == "shear_y":
    return _affine(image, (1, 0, 0, value, 1, 0))
  width, height = image.size
  pixels = value if space == "wide" else value * (width if op == "translate_x" else height)
  if op == "translate_x":
    return _affine(image, (1, 0, pixels, 0, 1, 0))
  if op == "translate_y":
    return _affine(image, (1, 0, 0, 0, 1, pixels))
  raise ValueError(f"unknown op {op!r}; known: {OPS}")


def rand_augment(image: Image.Image, rng: np.random.Generator, num_ops: int = 2,
                 magnitude: int = 9) -> Image.Image:
  """torchvision's RandAugment: `num_ops` ops with replacement at magnitude bin m of 31."""
  if not 0 <= magnitude <= NUM_BINS - 1:
    raise ValueError(f"magnitude must be in 0..{NUM_BINS - 1}, got {magnitude}")
  for op_index in rng.integers(0, len(OPS), size=num_ops):
    image = apply_op(image, OPS[op_index], magnitude / (NUM_BINS - 1), _sign(rng),
                     "torchvision")
  return image


def trivial_augment_wide(image: Image.Image, rng: np.random.Generator) -> Image.Image:
  """TrivialAugmentWide: one uniformly drawn op at a uniformly drawn magnitude bin."""
  op = OPS[rng.integers(0, len(OPS))]
  fraction = rng.integers(0, NUM_BINS) / (NUM_BINS - 1)
  return apply_op(image, op, fraction, _sign(rng), "wide")
