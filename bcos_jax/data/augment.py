"""Per-image augmentations of the official recipes, on uint8 images with NumPy/PIL.

Every random op takes a `np.random.Generator` (grain's per-record generator),
so a pipeline is deterministic given its seed whatever the number of workers.
Geometry follows torchvision (RandomResizedCrop, Resize, CenterCrop,
RandomErasing) and the official v1 code (PCA lighting).
"""

import math

import numpy as np
from PIL import Image, ImageEnhance

from bcos_jax.data.decode import draft_for_box, open_image, to_rgb_array

# ImageNet PCA of the RGB pixels (AlexNet; fb.resnet.torch, used by the v1 code).
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop box (left, top, width, height): 10 tries, then centre."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, w, h
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(image, rng: np.random.Generator, size: int,
                        scale=(0.08, 1.0)) -> Image.Image:
  """Crops a random box and resizes it to size×size (bilinear, antialiased).

  For an encoded JPEG the box is drawn on the header's size, then the image
  is decoded at the largest 1/2^k size that keeps the box above `size`.
  """
  image = image if isinstance(image, Image.Image) else open_image(image)
  left, top, w, h = random_resized_crop_box(*image.size, rng, scale=scale)
  factor = draft_for_box(image, (w, h), (size, size))
  box = (left * factor, top * factor, (left + w) * factor, (top + h) * factor)
  return _rgb(image).resize((size, size), Image.BILINEAR, box=box)


def resize_center_crop(image, resize: int, crop: int) -> Image.Image:
  """Resize the shorter side to `resize`, then a centre crop×crop (the eval transform).

  Done as one resize of the crop's box in the original image (no intermediate
  image), and a JPEG is decoded at reduced size when the box allows it.
  """
  image = image if isinstance(image, Image.Image) else open_image(image)
  width, height = image.size
  new_w, new_h = _shorter_side_size(width, height, resize)
  scale = width / new_w  # original pixels per resized pixel
  left, top = round((new_w - crop) / 2), round((new_h - crop) / 2)
  box = (left * scale, top * scale, (left + crop) * scale, (top + crop) * scale)
  factor = draft_for_box(image, (crop * scale, crop * scale), (crop, crop))
  return _rgb(image).resize((crop, crop), Image.BILINEAR, box=tuple(v * factor for v in box))


def _shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
  if width <= height:
    return size, int(size * height / width)
  return int(size * width / height), size


def _rgb(image: Image.Image) -> Image.Image:
  return image if image.mode == "RGB" else image.convert("RGB")


def pad_and_random_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        padding: int) -> np.ndarray:
  """Zero-pads by `padding` pixels and takes a random size×size crop (CIFAR)."""
  image = np.asarray(image)
  top, left = rng.integers(0, image.shape[0] + 2 * padding - size + 1, size=2)
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  return padded[top:top + size, left:left + size]


def horizontal_flip(image, rng: np.random.Generator, p: float = 0.5):
  """Mirrors a PIL image or an HWC array with probability p."""
  if rng.uniform() >= p:
    return image
  if isinstance(image, Image.Image):
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(image)[:, ::-1]


def _linear_lut(scale: float, offset: float) -> list[int]:
  """A 256-entry table of clip(round(scale·v + offset)) for PIL's `point`."""
  values = np.clip(np.round(scale * np.arange(256) + offset), 0, 255).astype(np.uint8)
  return values.tolist()


def color_jitter(image: Image.Image, rng: np.random.Generator, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4) -> Image.Image:
  """torchvision's ColorJitter (no hue): factors in [1-s, 1+s], applied in random order.

  Brightness (v·f) and contrast (mean + f·(v - mean), mean of the grey image)
  are per-value maps, applied as lookup tables; saturation blends with the
  grey image, as PIL's ImageEnhance.Color.
  """
  factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)]
  for index in rng.permutation(3):
    factor = factors[index]
    if index == 0:
      image = image.point(_linear_lut(factor, 0.0) * 3)
    elif index == 1:
      mean = np.asarray(image.convert("L"), np.float32).mean()
      image = image.point(_linear_lut(factor, (1 - factor) * mean) * 3)
    else:
      image = ImageEnhance.Color(image).enhance(factor)
  return image


def pca_lighting(image: Image.Image, rng: np.random.Generator,
                 alpha_std: float = 0.1) -> Image.Image:
  """AlexNet-style PCA lighting noise (the v1 code's `Lighting(0.1)`).

  The noise is one RGB offset per image, so it is a per-channel lookup table.
  """
  alpha = rng.normal(0.0, alpha_std, size=3)
  shift = IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL) * 255.0  # the v1 code works in [0, 1]
  return image.point(sum((_linear_lut(1.0, float(c)) for c in shift), []))


def random_erasing(image: np.ndarray, rng: np.random.Generator, p: float = 0.1,
                   scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> np.ndarray:
  """torchvision's RandomErasing with value 0: blanks a random box with probability p."""
  image = np.asarray(image)
  if rng.uniform() >= p:
    return image
  height, width = image.shape[:2]
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    erase_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    h = int(round(math.sqrt(erase_area * aspect)))
    w = int(round(math.sqrt(erase_area / aspect)))
    if h < height and w < width:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      erased = image.copy()
      erased[top:top + h, left:left + w] = 0
      return erased
  return image


def as_array(image) -> np.ndarray:
  """uint8 (H, W, 3) from a PIL image, an array or encoded bytes."""
  if isinstance(image, Image.Image):
    return to_rgb_array(image)
  if isinstance(image, (bytes, np.bytes_)):
    return to_rgb_array(open_image(image))
  return np.asarray(image)


def as_pil(image) -> Image.Image:
  """An RGB PIL image from a PIL image, an array or encoded bytes."""
  return _rgb(image if isinstance(image, Image.Image) else open_image(image))
