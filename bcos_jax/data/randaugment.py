"""RandAugment (the B-cos v1 code's and torchvision's) and TrivialAugmentWide, on PIL images.

- `rand_augment_v1`: the implementation the v1 ImageNet recipe used (from
  ildoonet/pytorch-randaugment): 16 ops drawn with replacement, each at the
  value `m/30 · (max - min) + min` of its range. Its quirks are kept: the
  enhancements are not signed (factor 0.64 at m = 9), posterize keeps
  `max(1, int(v))` bits, uncovered pixels are black, Cutout paints a grey
  square.
- `rand_augment` (torchvision, used by the v2 ViT recipe) and
  `trivial_augment_wide` share torchvision's 14-op table on 31 magnitude bins;
  signed ops flip sign with p = 0.5.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

NUM_BINS = 31  # torchvision's magnitude bins (0..30); the v1 code divides m by 30 too

_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}


def _sign(rng: np.random.Generator) -> float:
  return -1.0 if rng.uniform() < 0.5 else 1.0


def _affine(image: Image.Image, matrix) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix)  # black fill, nearest


# -- v1 (the official CVPR 2022 code) -------------------------------------------------

# (op, min, max) in the official order.
V1_OPS = (("auto_contrast", 0, 1), ("equalize", 0, 1), ("invert", 0, 1), ("rotate", 0, 30),
          ("posterize", 0, 4), ("solarize", 0, 256), ("solarize_add", 0, 110),
          ("color", 0.1, 1.9), ("contrast", 0.1, 1.9), ("brightness", 0.1, 1.9),
          ("sharpness", 0.1, 1.9), ("shear_x", 0.0, 0.3), ("shear_y", 0.0, 0.3),
          ("cutout", 0, 40), ("translate_x", 0.0, 100), ("translate_y", 0.0, 100))
CUTOUT_COLOUR = (125, 123, 114)


def apply_v1_op(image: Image.Image, op: str, value: float,
                rng: np.random.Generator) -> Image.Image:
  """One op of the v1 table at its value (signs and cutout positions from `rng`)."""
  if op == "auto_contrast":
    return ImageOps.autocontrast(image)
  if op == "equalize":
    return ImageOps.equalize(image)
  if op == "invert":
    return ImageOps.invert(image)
  if op == "rotate":
    return image.rotate(value * _sign(rng))
  if op == "posterize":
    return ImageOps.posterize(image, max(1, int(value)))
  if op == "solarize":
    return ImageOps.solarize(image, value)
  if op == "solarize_add":
    shifted = np.clip(np.asarray(image, np.int32) + int(value), 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), 128)
  if op in _ENHANCERS:
    return _ENHANCERS[op](image).enhance(value)
  if op == "shear_x":
    return _affine(image, (1, value * _sign(rng), 0, 0, 1, 0))
  if op == "shear_y":
    return _affine(image, (1, 0, 0, value * _sign(rng), 1, 0))
  if op == "translate_x":
    return _affine(image, (1, 0, value * _sign(rng), 0, 1, 0))
  if op == "translate_y":
    return _affine(image, (1, 0, 0, 0, 1, value * _sign(rng)))
  if op == "cutout":
    width, height = image.size
    x0 = int(max(0, rng.uniform(0, width) - value / 2))
    y0 = int(max(0, rng.uniform(0, height) - value / 2))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((x0, y0, min(width, x0 + value), min(height, y0 + value)),
                                    CUTOUT_COLOUR)
    return image
  raise ValueError(f"unknown v1 op {op!r}")


def rand_augment_v1(image: Image.Image, rng: np.random.Generator, num_ops: int = 2,
                    magnitude: int = 9) -> Image.Image:
  """The v1 recipe's RandAugment(n, m): n ops with replacement, at m/30 of their range."""
  if not 0 <= magnitude <= 30:
    raise ValueError(f"magnitude must be in 0..30, got {magnitude}")
  for index in rng.integers(0, len(V1_OPS), size=num_ops):
    op, low, high = V1_OPS[index]
    image = apply_v1_op(image, op, magnitude / 30 * (high - low) + low, rng)
  return image


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
