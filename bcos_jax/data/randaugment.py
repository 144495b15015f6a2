"""RandAugment (v1 code and torchvision) and TrivialAugmentWide on PIL images.

All three draw ops from the same 14-op table; they differ in how an op's
magnitude is chosen:
- "v1" (the B-cos v1 ImageNet recipe): n ops drawn with replacement, each at
  the fraction m/30 of its range;
- "torchvision" RandAugment: the same, on torchvision's 31 magnitude bins;
- "wide" TrivialAugmentWide: one op, a uniformly drawn bin of wider ranges.
Signed ops (rotate, shear, translate, enhancements) flip sign with p = 0.5.
"""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

NUM_BINS = 31  # torchvision's magnitude bins (0..30)

# op -> the magnitude at the top of the range, per space. Translate is a
# fraction of the image size for "v1" and "torchvision" (150/331 is
# torchvision's), pixels for "wide" (32, torchvision's). Enhancements give
# factor 1 ± magnitude; posterize removes up to the given number of bits;
# solarize lowers the threshold from 256 by up to the given fraction.
_RANGES = {
    "v1":          {"rotate": 30.0, "shear": 0.3, "translate": 0.45, "enhance": 0.9,
                    "posterize": 4, "solarize": 1.0},
    "torchvision": {"rotate": 30.0, "shear": 0.3, "translate": 150 / 331, "enhance": 0.9,
                    "posterize": 4, "solarize": 1.0},
    "wide":        {"rotate": 135.0, "shear": 0.99, "translate": 32.0, "enhance": 0.99,
                    "posterize": 6, "solarize": 1.0},
}

OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
       "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
_SIGNED = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y", "color", "contrast",
           "brightness", "sharpness"}
_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}
FILL = (128, 128, 128)  # grey fill of uncovered pixels, as in timm and the v1 code


def _range_key(op: str) -> str:
  if op in _ENHANCERS:
    return "enhance"
  return op.split("_")[0]


def apply_op(image: Image.Image, op: str, fraction: float, sign: float, space: str) -> Image.Image:
  """Applies `op` at `fraction` (0..1) of its range in `space`, with the given sign."""
  if op in ("identity",):
    return image
  if op == "auto_contrast":
    return ImageOps.autocontrast(image)
  if op == "equalize":
    return ImageOps.equalize(image)
  value = fraction * _RANGES[space][_range_key(op)]
  if op in _SIGNED:
    value *= sign
  width, height = image.size
  if op == "rotate":
    return image.rotate(value, resample=Image.NEAREST, fillcolor=FILL)
  if op == "solarize":
    return ImageOps.solarize(image, threshold=int(round(256 - 256 * value)))
  if op == "posterize":
    return ImageOps.posterize(image, max(1, 8 - int(round(value))))
  if op in _ENHANCERS:
    return _ENHANCERS[op](image).enhance(1.0 + value)
  if op == "shear_x":
    return image.transform(image.size, Image.AFFINE, (1, value, 0, 0, 1, 0), fillcolor=FILL)
  if op == "shear_y":
    return image.transform(image.size, Image.AFFINE, (1, 0, 0, value, 1, 0), fillcolor=FILL)
  pixels = value if space == "wide" else value * (width if op == "translate_x" else height)
  if op == "translate_x":
    return image.transform(image.size, Image.AFFINE, (1, 0, pixels, 0, 1, 0), fillcolor=FILL)
  if op == "translate_y":
    return image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, pixels), fillcolor=FILL)
  raise ValueError(f"unknown op {op!r}; known: {OPS}")


def _sign(rng: np.random.Generator) -> float:
  return -1.0 if rng.uniform() < 0.5 else 1.0


def rand_augment(image: Image.Image, rng: np.random.Generator, num_ops: int = 2,
                 magnitude: int = 9, space: str = "v1") -> Image.Image:
  """RandAugment: `num_ops` ops drawn with replacement at a fixed magnitude.

  Args:
    image: an RGB PIL image.
    rng: the record's generator.
    num_ops: n.
    magnitude: m; the fraction of each range is m/30 (v1) or bin m of 31
      (torchvision), the same number.
    space: "v1" or "torchvision".
  """
  if space not in ("v1", "torchvision"):
    raise ValueError(f"RandAugment space must be 'v1' or 'torchvision', got {space!r}")
  if not 0 <= magnitude <= NUM_BINS - 1:
    raise ValueError(f"magnitude must be in 0..{NUM_BINS - 1}, got {magnitude}")
  for op_index in rng.integers(0, len(OPS), size=num_ops):
    image = apply_op(image, OPS[op_index], magnitude / (NUM_BINS - 1), _sign(rng), space)
  return image


def trivial_augment_wide(image: Image.Image, rng: np.random.Generator) -> Image.Image:
  """TrivialAugmentWide: one uniformly drawn op at a uniformly drawn magnitude bin."""
  op = OPS[rng.integers(0, len(OPS))]
  fraction = rng.integers(0, NUM_BINS) / (NUM_BINS - 1)
  return apply_op(image, op, fraction, _sign(rng), "wide")
