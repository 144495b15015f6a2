"""PIL's colour operations on uint8 (H, W, 3) arrays, with PIL's numbers.

torchvision and the official B-cos code augment PIL images. These give the
same values (`tests/data/test_pixel_ops.py` compares each with PIL) on
NumPy arrays, without PIL's copies in and out, and with the statistics
PIL would read from the image (histograms, extremes, mean grey) as
arguments: a crop can then be changed as the whole image would be
(`randaugment_v1`). Tables are applied with OpenCV.
"""

import cv2
import numpy as np
from PIL import Image, ImageEnhance

# ImageFilter.SMOOTH, the degenerate image of ImageEnhance.Sharpness.
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
# PIL's RGB -> L weights (16-bit fixed point).
_GREY_WEIGHTS = np.array([19595, 38470, 7471]) / 65536
_IDENTITY = np.arange(256, dtype=np.int64)


# -- statistics ------------------------------------------------------------------

def histograms(pixels: np.ndarray) -> np.ndarray:
  """(3, 256) counts of every value in every channel."""
  return np.stack([cv2.calcHist([pixels], [c], None, [256], [0, 256]).ravel()
                   for c in range(pixels.shape[-1])]).astype(np.int64)


def extremes(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The lowest and the highest value of each channel."""
  bounds = np.array([cv2.minMaxLoc(channel)[:2] for channel in cv2.split(pixels)])
  return bounds[:, 0].astype(np.int64), bounds[:, 1].astype(np.int64)


def mean_grey(pixels: np.ndarray) -> int:
  """The grey ImageEnhance.Contrast blends towards: int(mean of the L image + 0.5).

  From the channel means: PIL rounds each pixel's grey, whose errors average
  out, so this is PIL's value unless the mean lies within ~0.01 of a half.
  """
  return int(np.dot(cv2.mean(pixels)[:3], _GREY_WEIGHTS) + 0.5)


# -- lookup tables (ImageOps, and the enhancements towards a constant) -----------

def apply_lut(pixels: np.ndarray, tables: np.ndarray) -> np.ndarray:
  """Maps each channel through its row of `tables` ((3, 256)), or all through one (256,)."""
  tables = np.asarray(tables).astype(np.uint8)
  if tables.ndim == 2 and not np.all(tables == tables[:1]):
    tables = np.ascontiguousarray(tables.T).reshape(256, 1, -1)
  else:  # one table: OpenCV is twice as fast
    tables = tables.reshape(-1, 256)[0]
  return cv2.LUT(pixels, tables)


def blend_lut(constant: float, factor: float) -> np.ndarray:
  """The table of PIL's blend towards a constant image (brightness: 0; contrast: the mean)."""
  return blend(np.float32(constant), _IDENTITY, factor)


def invert_lut() -> np.ndarray:
  return 255 - _IDENTITY


def posterize_lut(bits: int) -> np.ndarray:
  """ImageOps.posterize: keeps the top `bits` (1..8) bits."""
  if not 1 <= bits <= 8:
    raise ValueError(f"posterize keeps 1..8 bits, got {bits}")
  return _IDENTITY & ~(2 ** (8 - bits) - 1)


def solarize_lut(threshold: float) -> np.ndarray:
  """ImageOps.solarize: inverts the values at or above `threshold`."""
  return np.where(_IDENTITY < threshold, _IDENTITY, 255 - _IDENTITY)


def solarize_add_lut(addition: int, threshold: float = 128) -> np.ndarray:
  """Adds `addition` (saturating at 255), then solarizes at `threshold` (the v1 code's op)."""
  added = np.minimum(_IDENTITY + addition, 255)
  return np.where(added < threshold, added, 255 - added)


def autocontrast_lut(low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """ImageOps.autocontrast (no cutoff): each channel from its low..high to 0..255."""
  tables = []
  for lo, hi in zip(low, high, strict=True):
    if hi <= lo:
      tables.append(_IDENTITY)
      continue
    scale = 255.0 / (hi - lo)
    tables.append(np.clip((_IDENTITY * scale - lo * scale).astype(np.int64), 0, 255))
  return np.stack(tables)


def equalize_lut(counts: np.ndarray) -> np.ndarray:
  """ImageOps.equalize for these histograms: each channel through its cumulative histogram."""
  tables = []
  for band in np.asarray(counts, np.int64):
    present = band[band > 0]
    step = (present.sum() - present[-1]) // 255 if len(present) > 1 else 0
    if not step:
      tables.append(_IDENTITY)
      continue
    below = np.concatenate([[0], np.cumsum(band)[:-1]])  # pixels under each value
    tables.append((step // 2 + below) // step)
  return np.clip(np.stack(tables), 0, 255)


# -- enhancements (ImageEnhance) ----------------------------------------------------

def blend(degenerate, pixels: np.ndarray, factor: float) -> np.ndarray:
  """PIL's `Image.blend(degenerate, image, factor)`: float32, clipped, truncated to uint8."""
  factor = np.float32(factor)
  degenerate = np.asarray(degenerate, np.float32)
  out = degenerate + factor * (pixels.astype(np.float32) - degenerate)
  return np.clip(out, 0, 255).astype(np.uint8)


def brightness(pixels: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.Brightness: a blend with black."""
  return apply_lut(pixels, blend_lut(0, factor))


def contrast(pixels: np.ndarray, factor: float, mean: int) -> np.ndarray:
  """ImageEnhance.Contrast towards a given mean grey (`mean_grey` of the image it reads)."""
  return apply_lut(pixels, blend_lut(mean, factor))


def color(pixels: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.Color (saturation): a blend with the image's grey version."""
  return np.array(ImageEnhance.Color(Image.fromarray(pixels)).enhance(factor))


def smooth(pixels: np.ndarray) -> np.ndarray:
  """ImageFilter.SMOOTH; the border pixels are kept, as PIL's.

  The 13ths never round from exactly one half, so OpenCV's float rounding
  gives PIL's numbers.
  """
  out = cv2.filter2D(pixels, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
  out[0], out[-1], out[:, 0], out[:, -1] = pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]
  return out


def sharpness(pixels: np.ndarray, factor: float) -> np.ndarray:
  """ImageEnhance.Sharpness: a blend with the smoothed image."""
  return blend(smooth(pixels), pixels, factor)
