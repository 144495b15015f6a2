"""Per-image augmentations of the official recipes, on uint8 images (NumPy, OpenCV, PIL).

Every random op takes a `np.random.Generator` (grain's per-record generator),
so a pipeline is deterministic given its seed whatever the number of workers.
Geometry follows torchvision (RandomResizedCrop, Resize, CenterCrop,
RandomErasing), ColorJitter torchvision's tensor code, and PCA lighting the
official v1 code. Training crops are arrays (decoded and resampled with
OpenCV); the evaluation resize is PIL's antialiased one, as torchvision's.
"""

import math

import cv2
import numpy as np
from PIL import Image

from bcos_jax.data import decode, randaugment_v1
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
                        scale=(0.08, 1.0)) -> np.ndarray:
  """A random box resized to uint8 (size, size, 3) (bilinear; `randaugment_v1.render_crop`).

  For an encoded JPEG the box is drawn on the header's size, then the image
  is decoded at the largest 1/2^k size that keeps the box above `size`.
  """
  full_size = decode.image_size(image)
  box = random_resized_crop_box(*full_size, rng, scale=scale)
  photo = decode.decode_rgb(image, decode.reduction_for_box(box[2:], (size, size)))
  return randaugment_v1.render_crop(photo, full_size, (), box, size)


def resize_center_crop(image, resize: int, crop: int) -> Image.Image:
  """Resize the shorter side to `resize`, then a centre crop×crop (the eval transform).

  Done as one resize of the crop's box in the original image (no intermediate
  image), and a JPEG is decoded at reduced size when the box allows it.
  """
  image = image if isinstance(image, Image.Image) else open_image(image)
  width, height = image.size
  new_w, new_h = _shorter_side_size(width, height, resize)
  # Original pixels per resized pixel, per axis: the resized size is truncated to
  # integers (as torchvision's), so the two scales differ slightly, and one scale for
  # both would put the box outside the image when resize == crop.
  scale_x, scale_y = width / new_w, height / new_h
  left, top = round((new_w - crop) / 2), round((new_h - crop) / 2)
  box = (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)
  factor = draft_for_box(image, (crop * scale_x, crop * scale_y), (crop, crop))
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


def draw_color_jitter(rng: np.random.Generator, brightness: float = 0.4,
                      contrast: float = 0.4, saturation: float = 0.4) -> np.ndarray:
  """ColorJitter's draws: float32 (6,), the brightness, contrast and saturation factors
  (each in [1 - s, 1 + s]) and the order in which they apply (a permutation of 0, 1, 2)."""
  factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)]
  return np.array([*factors, *rng.permutation(3)], np.float32)


def apply_color_jitter(image, draws: np.ndarray) -> np.ndarray:
  """ColorJitter with the draws of `draw_color_jitter`: uint8 (H, W, 3) in and out.

  In float32, clipped after each op as torchvision's tensor code: brightness
  scales, contrast blends with the mean grey, saturation with the grey image
  (grey: 0.299 R + 0.587 G + 0.114 B). `bcos_jax.data.photometric` is the same on
  the device.
  """
  pixels = as_array(image).astype(np.float32)
  for index in draws[3:].astype(int):
    factor = float(draws[index])
    if index == 0:
      pixels *= np.float32(factor)
    elif index == 1:
      mean = float(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).mean())
      pixels = cv2.addWeighted(pixels, factor, pixels, 0.0, (1 - factor) * mean)
    else:  # OpenCV blends with the grey image without NumPy's slow 3-wide broadcast
      grey = cv2.cvtColor(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
      pixels = cv2.addWeighted(pixels, factor, grey, 1 - factor, 0.0)
    np.clip(pixels, 0, 255, out=pixels)
  return np.rint(pixels).astype(np.uint8)


def color_jitter(image, rng: np.random.Generator, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4) -> np.ndarray:
  """torchvision's ColorJitter (no hue), as on tensors: uint8 (H, W, 3) in and out.

  Factors are drawn in [1 - s, 1 + s] and applied in a random order
  (`apply_color_jitter`). The v1 code applied it to PIL images, which truncate
  to uint8 after each op: within a level or two.
  """
  return apply_color_jitter(image, draw_color_jitter(rng, brightness, contrast, saturation))


def draw_lighting(rng: np.random.Generator, alpha_std: float = 0.1) -> np.ndarray:
  """PCA lighting's draw: the RGB offset in 0..255 levels, rounded, float32 (3,)."""
  alpha = rng.normal(0.0, alpha_std, size=3)
  return np.rint(IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL) * 255.0).astype(np.float32)


def apply_lighting(image, shift: np.ndarray) -> np.ndarray:
  """Adds the offset of `draw_lighting`, saturating: uint8 (H, W, 3)."""
  return cv2.add(as_array(image), (*shift.tolist(), 0.0))


def pca_lighting(image, rng: np.random.Generator, alpha_std: float = 0.1) -> np.ndarray:
  """AlexNet-style PCA lighting noise (the v1 code's `Lighting(0.1)`): uint8 (H, W, 3).

  The noise is one RGB offset per image: the v1 code adds it to the [0, 1]
  tensor, here it is rounded and added to the 0..255 values (saturating).
  """
  return apply_lighting(image, draw_lighting(rng, alpha_std))


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
