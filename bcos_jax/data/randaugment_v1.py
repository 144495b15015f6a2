"""The v1 ImageNet recipe's RandAugment, rendered straight into its RandomResizedCrop.

The official v1 code (its copy of ildoonet/pytorch-randaugment, then
torchvision) applies RandAugment(n=2, m=9) to the whole photograph and then
takes a RandomResizedCrop: each op is a full-resolution pass over an image
of which the crop keeps a part, at a lower resolution. Here the crop is the
only image made, and every op is carried out in the crop's coordinates:

- the geometric ops (rotate, shear, translate) are affine maps; composed
  with the crop's map they make one resampling of the decoded photograph
  into the crop. The black the op brings in where it leaves the image is
  painted at the op's place in the sequence, so that the colour ops after
  it recolour it, as in the v1 code;
- cutout paints its grey square where the square lies at its place in the
  sequence (a later rotation turns it, as in the v1 code);
- the per-pixel ops (invert, posterize, solarize, solarize_add, brightness,
  colour) give PIL's numbers (`pixel_ops`); those whose thresholds an
  interpolation would blur, and the ops before them, change the photograph
  before the resampling, as in the v1 code, the others the crop;
- the ops that read the whole image take what they read from the whole
  image at that point of the sequence: the decoded photograph when no op
  precedes them, else a rendering of it: auto_contrast its extremes (every
  pixel), equalize its histograms and contrast its mean grey (every other
  pixel in each direction);
- sharpness smooths the crop at its resolution, not the photograph's.

So what differs from the v1 code is the resampling (one bilinear resampling
where the v1 code resamples twice, nearest for the op then PIL's
antialiased bilinear for the crop; `_resample`), the per-pixel ops coming
after it (posterize and solarize leave no in-between values at edges), the
subsampled statistics and the scale of the sharpness filter: on real photos
a few grey levels on average (`tests/data/test_randaugment_v1.py` compares
every op with the literal PIL implementation). The values, order, signs and
fills of the ops are the v1 code's, with its quirks: the enhancements are
not signed (factor 0.64 at m = 9), posterize keeps `max(1, int(v))` bits,
cutout paints a grey (125, 123, 114) square of side m/30·40 photograph
pixels.

With no ops, `render_crop` is the RandomResizedCrop of every recipe.
"""
import dataclasses
import functools
import math
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from bcos_jax.data import pixel_ops

# (op, min, max) in the official order; at magnitude m an op has the value m/30·(max-min)+min.
V1_OPS = (("auto_contrast", 0, 1), ("equalize", 0, 1), ("invert", 0, 1), ("rotate", 0, 30),
          ("posterize", 0, 4), ("solarize", 0, 256), ("solarize_add", 0, 110),
          ("color", 0.1, 1.9), ("contrast", 0.1, 1.9), ("brightness", 0.1, 1.9),
          ("sharpness", 0.1, 1.9), ("shear_x", 0.0, 0.3), ("shear_y", 0.0, 0.3),
          ("cutout", 0, 40), ("translate_x", 0.0, 100), ("translate_y", 0.0, 100))
GEOMETRIC = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
CUTOUT_COLOUR = (125, 123, 114)

# Colour ops whose thresholds an interpolation would blur: they, and the colour ops
# before them, change the photograph before the resampling, as in the v1 code.
BEFORE_RESAMPLING = frozenset({"posterize", "solarize", "solarize_add", "equalize",
                               "auto_contrast"})
# When ops precede them, equalize's histogram and contrast's mean grey are read from
# every STATISTICS_STEP-th pixel of the whole image in each direction.
STATISTICS_STEP = 2
_CV2_FILTERS = {Image.BILINEAR: cv2.INTER_LINEAR, Image.NEAREST: cv2.INTER_NEAREST}


@dataclasses.dataclass(frozen=True)
class Op:
  """One drawn op.

  Attributes:
    name: a name of `V1_OPS`.
    value: its value at the magnitude, with its drawn sign for the geometric ops.
    square: cutout's square (x0, y0, x1, y1), inclusive, in the photograph's pixels.
  """
  name: str
  value: float
  square: tuple[int, int, int, int] | None = None


def draw_ops(rng: np.random.Generator, size: tuple[int, int], num_ops: int = 2,
             magnitude: int = 9) -> tuple[Op, ...]:
  """RandAugment(n, m) of the v1 code: n ops drawn with replacement, at m/30 of their range.

  Args:
    rng: the record's generator (op choices, signs, cutout positions).
    size: (width, height) of the photograph at full resolution.
    num_ops: n.
    magnitude: m in 0..30.

  Returns:
    The ops in the order they are applied.
  """
  if not 0 <= magnitude <= 30:
    raise ValueError(f"magnitude must be in 0..30, got {magnitude}")
  width, height = size
  ops = []
  for index in rng.integers(0, len(V1_OPS), size=num_ops):
    name, low, high = V1_OPS[index]
    value = magnitude / 30 * (high - low) + low
    square = None
    if name in GEOMETRIC:
      value *= -1.0 if rng.uniform() < 0.5 else 1.0
    elif name == "cutout":
      # PIL's rectangle truncates the corners and includes the far ones.
      x0 = int(max(0.0, rng.uniform(0, width) - value / 2))
      y0 = int(max(0.0, rng.uniform(0, height) - value / 2))
      square = (x0, y0, int(min(width, x0 + value)), int(min(height, y0 + value)))
    ops.append(Op(name, value, square))
  return tuple(ops)


def _affine(a, b, c, d, e, f) -> np.ndarray:
  return np.array([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]])


def inverse_map(op: Op, size: tuple[int, int]) -> np.ndarray:
  """The op's map from its output's coordinates to its input's (PIL's AFFINE data).

  Coordinates are continuous, pixel i covering [i, i + 1), as in PIL.
  """
  v = op.value
  if op.name == "rotate":  # Image.rotate: counter-clockwise about the centre
    angle = -math.radians(v)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = size[0] / 2, size[1] / 2
    return _affine(cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
  return {"shear_x": _affine(1, v, 0, 0, 1, 0), "shear_y": _affine(1, 0, 0, v, 1, 0),
          "translate_x": _affine(1, 0, v, 0, 1, 0),
          "translate_y": _affine(1, 0, 0, 0, 1, v)}[op.name]


def _points(matrix: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Where the centres of an (h, w) canvas's pixels fall under `matrix`."""
  ys = np.arange(shape[0], dtype=np.float32) + 0.5
  xs = np.arange(shape[1], dtype=np.float32) + 0.5
  matrix = matrix.astype(np.float32)
  x = matrix[0, 0] * xs[None, :] + (matrix[0, 1] * ys + matrix[0, 2])[:, None]
  y = matrix[1, 0] * xs[None, :] + (matrix[1, 1] * ys + matrix[1, 2])[:, None]
  return x, y


def _resample(photo: np.ndarray, matrix: np.ndarray, size: tuple[int, int],
              resample: int) -> np.ndarray:
  """The canvas of `size` whose pixel centres sample `photo` at `matrix` (black outside).

  One OpenCV resampling (PIL's is four to eight times slower): a resize of
  the box when the map is axis-aligned and inside the photograph, else a
  warp. Bilinear sampling is not antialiased (as TensorFlow's default
  resize; below a halving it differs from PIL's antialiased resize by about
  one level on average); a reduction by 2 or more is first made by averaging
  whole blocks (JPEGs are decoded at the reduced size already).
  """
  factor = int(min(np.hypot(*matrix[:2, 0]), np.hypot(*matrix[:2, 1])))
  if factor >= 2 and resample == Image.BILINEAR:
    h, w = photo.shape[0] // factor, photo.shape[1] // factor
    photo = cv2.resize(photo[:h * factor, :w * factor], (w, h), interpolation=cv2.INTER_AREA)
    matrix = np.diag([1 / factor, 1 / factor, 1.0]) @ matrix
  (a, b, c), (d, e, f) = matrix[0], matrix[1]
  if b == 0 and d == 0 and a > 0 and e > 0:
    # Boxes fall on whole pixels but for a JPEG's reduced decode (within half a pixel).
    x0, y0 = round(c), round(f)
    x1, y1 = round(c + a * size[0]), round(f + e * size[1])
    if 0 <= x0 < x1 <= photo.shape[1] and 0 <= y0 < y1 <= photo.shape[0]:
      region = photo[y0:y1, x0:x1]
      if region.shape[:2] == (size[1], size[0]):
        return region.copy()
      return cv2.resize(region, size, interpolation=_CV2_FILTERS[resample])
  # OpenCV indexes pixel centres (i), PIL's maps take continuous coordinates (i + 0.5).
  centres = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
  to_source = np.linalg.inv(centres) @ matrix @ centres
  flags = _CV2_FILTERS[resample] | cv2.WARP_INVERSE_MAP
  return cv2.warpAffine(photo, to_source[:2], size, flags=flags,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _corners(matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(4, 2): where the corners of an (h, w) canvas fall under `matrix`."""
  h, w = shape
  return (matrix[:2, :2] @ np.array([[0, w, 0, w], [0, 0, h, h]]) + matrix[:2, 2:]).T


def _paint(image: np.ndarray, where: np.ndarray, colour: tuple[int, ...]) -> np.ndarray:
  image[where] = colour
  return image


def render(photo: np.ndarray, size: tuple[int, int], ops: tuple[Op, ...],
           to_frame: np.ndarray, canvas: tuple[int, int],
           resample: int = Image.BILINEAR) -> np.ndarray:
  """The image after `ops`, seen through `to_frame`, as a uint8 (h, w, 3) canvas.

  The colour ops up to the last one whose thresholds would not survive an
  interpolation (`BEFORE_RESAMPLING`) change the photograph, as in the v1
  code; the others change the canvas. Either way an op recolours what the
  ops before it painted.

  Args:
    photo: the decoded uint8 (H, W, 3) photograph, possibly at a reduced size.
    size: (width, height) of the photograph at full resolution; the ops' units.
    ops: the drawn ops.
    to_frame: 3×3 map from the canvas's coordinates to the full-resolution
      coordinates of the image after the last op.
    canvas: (width, height) of the result.
    resample: PIL filter of the one resampling.
  """
  maps = [inverse_map(op, size) if op.name in GEOMETRIC else None for op in ops]
  # to_stage[k]: canvas -> the image after op k (0: the photograph).
  to_stage = [to_frame]
  for matrix in reversed(maps):
    to_stage.insert(0, to_stage[0] if matrix is None else matrix @ to_stage[0])
  split = max((k + 1 for k, op in enumerate(ops) if op.name in BEFORE_RESAMPLING), default=0)

  # The colour ops on the photograph, as functions of an image (statistics read once).
  pixels = photo.shape[0] * photo.shape[1]
  transforms = {k: _colour_transform(op, functools.partial(_whole_image, photo, size, ops[:k - 1]),
                                     pixels)
                for k, op in enumerate(ops[:split], start=1) if _is_colour(op)}
  source = photo
  for transform in transforms.values():
    source = transform(source)
  to_photo = np.diag([photo.shape[1] / size[0], photo.shape[0] / size[1], 1.0]) @ to_stage[0]
  image = _resample(source, to_photo, canvas, resample)

  for k, op in enumerate(ops, start=1):
    if _is_colour(op):
      if k > split:
        whole = functools.partial(_whole_image, photo, size, ops[:k - 1])
        image = _colour_transform(op, whole, pixels)(image)
      continue
    colour = (0, 0, 0) if op.name in GEOMETRIC else CUTOUT_COLOUR
    if k <= split:  # painted before colour ops that ran on the photograph: recolour the paint
      pixel = np.array([[colour]], np.uint8)
      for later, transform in transforms.items():
        pixel = transform(pixel) if later > k else pixel
      colour = tuple(pixel[0, 0].tolist())
    image = _paint_op(image, op, to_stage[k - 1], size, colour)
  return image


def _is_colour(op: Op) -> bool:
  return op.name not in GEOMETRIC and op.name != "cutout"


def _paint_op(image: np.ndarray, op: Op, to_input: np.ndarray, size: tuple[int, int],
              colour: tuple[int, ...]) -> np.ndarray:
  """Paints where a geometric op leaves its input (black in the v1 code), or cutout's square.

  `to_input` maps the canvas to the op's input.
  """
  shape = image.shape[:2]
  if op.name in GEOMETRIC:
    corners = _corners(to_input, shape)
    if corners.min() >= 0 and np.all(corners.max(0) <= size):
      return image  # the canvas sees none of the fill
    x, y = _points(to_input, shape)
    return _paint(image, (x < 0) | (x >= size[0]) | (y < 0) | (y >= size[1]), colour)
  x0, y0, x1, y1 = op.square
  corners = _corners(to_input, shape)
  if np.any(corners.min(0) >= (x1 + 1, y1 + 1)) or np.any(corners.max(0) <= (x0, y0)):
    return image  # the square is off the canvas
  x, y = _points(to_input, shape)
  return _paint(image, (x >= x0) & (x < x1 + 1) & (y >= y0) & (y < y1 + 1), colour)


def _whole_image(photo: np.ndarray, size: tuple[int, int], ops: tuple[Op, ...],
                 step: int) -> np.ndarray:
  """The whole image after `ops`: the photograph itself when no op precedes, else every
  `step`-th decoded pixel of a rendering (nearest, as the v1 code's ops)."""
  if not ops:
    return photo
  canvas = (-(-photo.shape[1] // step), -(-photo.shape[0] // step))
  to_full = np.diag([size[0] / canvas[0], size[1] / canvas[1], 1.0])
  return render(photo, size, ops, to_full, canvas, Image.NEAREST)


def _colour_transform(op: Op, whole_image, pixels: int) -> Callable[[np.ndarray], np.ndarray]:
  """A colour op as a function of an image.

  Args:
    op: a colour op.
    whole_image: `whole_image(step)` gives the whole image the op reads, at every
      `step`-th pixel of the decoded photograph (of `pixels` pixels) or finer.
    pixels: the decoded photograph's pixel count.
  """
  name, v = op.name, op.value
  if name == "color":
    return lambda pixels: pixel_ops.color(pixels, v)
  if name == "sharpness":
    return lambda pixels: pixel_ops.sharpness(pixels, v)
  if name == "auto_contrast":  # extremes: every pixel counts
    table = pixel_ops.autocontrast_lut(*pixel_ops.extremes(whole_image(1)))
  elif name == "equalize":  # a cumulative histogram, counted at the decoded size
    whole = whole_image(STATISTICS_STEP)
    scale = pixels / (whole.shape[0] * whole.shape[1])
    table = pixel_ops.equalize_lut(np.round(pixel_ops.histograms(whole) * scale))
  elif name == "contrast":
    table = pixel_ops.blend_lut(pixel_ops.mean_grey(whole_image(STATISTICS_STEP)), v)
  elif name == "brightness":
    table = pixel_ops.blend_lut(0, v)
  elif name == "invert":
    table = pixel_ops.invert_lut()
  elif name == "posterize":
    table = pixel_ops.posterize_lut(max(1, int(v)))
  elif name == "solarize":
    table = pixel_ops.solarize_lut(v)
  elif name == "solarize_add":
    table = pixel_ops.solarize_add_lut(int(v))
  else:
    raise ValueError(f"unknown v1 op {name!r}; known: {[op for op, _, _ in V1_OPS]}")
  return functools.partial(pixel_ops.apply_lut, tables=table)


def render_crop(photo: np.ndarray, size: tuple[int, int], ops: tuple[Op, ...],
                box: tuple[float, float, float, float], out_size: int) -> np.ndarray:
  """The crop `box` (left, top, width, height; full-resolution pixels) after `ops`.

  With no ops, this is the RandomResizedCrop of every recipe.

  Args:
    photo: the decoded uint8 (H, W, 3) photograph, possibly at a reduced size.
    size: (width, height) of the photograph at full resolution.
    ops: from `draw_ops`.
    box: the crop in the augmented image, as RandomResizedCrop draws it.
    out_size: the side of the square result.

  Returns:
    uint8 (out_size, out_size, 3).
  """
  left, top, w, h = box
  crop = _affine(w / out_size, 0, left, 0, h / out_size, top)
  return render(photo, size, ops, crop, (out_size, out_size))
