"""Input encodings: how a model wants its images, declared by the model itself.

B-cos layers have no bias, so a black pixel (all zeros) could contribute
nothing. Appending the inverse colours, [r, g, b, 1-r, 1-g, 1-b], makes every
colour a non-zero vector of the same norm, and lets explanations be decoded
back to colour. Conventional baselines (the `standard_*` models) take RGB
normalised by the ImageNet mean and standard deviation instead.

Each registered model names its encoding (`bcos_jax.models.info(model)`);
every tool (the train step, evaluation, explanations, attribution methods,
the localisation command) encodes through `models.input_transform(model)`,
so no tool assumes 6 channels.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bcos_jax.errors import UserError

ENCODED_CHANNELS = 6
# torchvision's ImageNet statistics, which the official baselines normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def add_inverse(images: jax.Array, axis: int = -1) -> jax.Array:
  """Encodes RGB images in [0, 1] as [r, g, b, 1-r, 1-g, 1-b].

  Args:
    images: RGB values in [0, 1], channels on `axis` (NHWC by default).
    axis: the channel axis.

  Returns:
    An array with twice the channels of `images` on `axis`.

  Raises:
    ValueError: if `images` does not have 3 channels on `axis`.
  """
  images = jnp.asarray(images)
  if images.ndim == 0 or images.shape[axis] != 3:
    raise UserError(
        f"add_inverse expects RGB images with 3 channels on axis {axis}, got shape "
        f"{images.shape}. Convert grayscale images to RGB first (repeat the channel).")
  return jnp.concatenate([images, 1.0 - images], axis=axis)


def normalize_rgb(images: jax.Array, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> jax.Array:
  """(images - mean) / std per channel, for NHWC RGB images in [0, 1]."""
  images = jnp.asarray(images)
  if images.ndim == 0 or images.shape[-1] != 3:
    raise UserError(f"normalize_rgb expects RGB images with 3 channels last, got shape "
                     f"{images.shape}. Convert grayscale images to RGB first.")
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


# The same statistics for the add-inverse channels: B-cosified networks normalise
# their 6-channel input with these inside the model (the official
# B-cosification's `bcosifynormalize`), so their pretrained first conv sees
# what it was trained on.
IMAGENET_ADD_INVERSE_MEAN = (*IMAGENET_MEAN, *(1.0 - m for m in IMAGENET_MEAN))
IMAGENET_ADD_INVERSE_STD = (*IMAGENET_STD, *IMAGENET_STD)


@dataclasses.dataclass(frozen=True)
class InputNormalisation:
  """(x - mean) / std per channel inside a model, or nothing.

  An affine map in front of a B-cos network: W(x) is still the explanation,
  but the contributions x·W(x) then sum to the logit minus its bias minus
  W(x)·mean (`bcos_jax.explain.mean_offset`).
  """
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None

  @classmethod
  def of(cls, mean, std) -> "InputNormalisation":
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
      raise UserError(f"input_mean and input_std must both be set, with one value per "
                       f"channel, or both None; got {mean} and {std}")
    return cls(None if mean is None else tuple(map(float, mean)),
               None if std is None else tuple(map(float, std)))

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.mean is None:
      return x
    return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)


def check_encoded(x: jax.Array, model_name: str = "this model") -> None:
  """Raises a clear error unless `x` is an NHWC batch of encoded images.

  Users of the official code who passed 3-channel images got a shape error
  deep inside a convolution; this check runs at the model's entry instead.
  """
  if x.ndim != 4 or x.shape[-1] != ENCODED_CHANNELS:
    hint = ""
    if x.ndim == 4 and x.shape[-1] == 3:
      hint = " You passed RGB images: encode them with bcos_jax.nn.add_inverse(images) first."
    elif x.ndim == 4 and x.shape[1] == ENCODED_CHANNELS:
      hint = " The channels look like they are on axis 1 (NCHW): bcos_jax is NHWC, transpose first."
    elif x.ndim == 3:
      hint = " Add a batch axis (x[None]) for a single image."
    raise UserError(
        f"{model_name} expects NHWC images with {ENCODED_CHANNELS} channels "
        f"[r, g, b, 1-r, 1-g, 1-b], as bcos_jax.nn.add_inverse makes them; got shape "
        f"{tuple(x.shape)}.{hint}")


def check_rgb(x: jax.Array, model_name: str = "this model") -> None:
  """Raises a clear error unless `x` is an NHWC batch of 3-channel (normalised) images."""
  if x.ndim != 4 or x.shape[-1] != 3:
    hint = ""
    if x.ndim == 4 and x.shape[-1] == ENCODED_CHANNELS:
      hint = (" You passed images encoded with add_inverse: this conventional model takes "
              "normalised RGB (bcos_jax.nn.normalize_rgb).")
    elif x.ndim == 4 and x.shape[1] == 3:
      hint = " The channels look like they are on axis 1 (NCHW): bcos_jax is NHWC, transpose first."
    elif x.ndim == 3:
      hint = " Add a batch axis (x[None]) for a single image."
    raise UserError(f"{model_name} expects NHWC RGB images (N, H, W, 3) normalised with the "
                     f"ImageNet mean and std; got shape {tuple(x.shape)}.{hint}")


@dataclasses.dataclass(frozen=True)
class InputEncoding:
  """How a model wants its input.

  Attributes:
    name: the key in `INPUT_ENCODINGS`.
    channels: channels of the encoded input.
    encode: RGB images in [0, 1] (N, H, W, 3) -> the model's input.
    check: (x, model name) -> None, raising a clear error for a wrong input.
    to_rgb: the model's input -> the RGB images in [0, 1] it encodes (for
      methods that look at the picture, e.g. LIME's superpixels).
  """
  name: str
  channels: int
  encode: Callable[[jax.Array], jax.Array]
  check: Callable[[jax.Array, str], None]
  to_rgb: Callable[[jax.Array], jax.Array]

  def from_uint8(self, images_uint8: jax.Array) -> jax.Array:
    """uint8 RGB images (as the data pipelines deliver them) -> the model's input (float32).

    Runs on the device: a quarter of the bytes of float32 cross from the host.
    """
    return self.encode(jnp.asarray(images_uint8).astype(jnp.float32) / 255.0)


INPUT_ENCODINGS: dict[str, InputEncoding] = {
    "add_inverse": InputEncoding("add_inverse", ENCODED_CHANNELS, add_inverse, check_encoded,
                                 to_rgb=lambda x: x[..., :3]),
    "imagenet_normalized_rgb": InputEncoding(
        "imagenet_normalized_rgb", 3, normalize_rgb, check_rgb,
        to_rgb=lambda x: x * jnp.asarray(IMAGENET_STD, x.dtype) + jnp.asarray(IMAGENET_MEAN,
                                                                               x.dtype)),
}


def get_encoding(name: str) -> InputEncoding:
  if name not in INPUT_ENCODINGS:
    raise UserError(f"unknown input encoding {name!r}; known: {', '.join(INPUT_ENCODINGS)}")
  return INPUT_ENCODINGS[name]
