"""Input encoding: images as [r, g, b, 1-r, 1-g, 1-b].

B-cos layers have no bias, so a black pixel (all zeros) could contribute
nothing. Appending the inverse colours makes every colour a non-zero vector
of the same norm, and lets explanations be decoded back to colour.
"""

import jax
import jax.numpy as jnp

ENCODED_CHANNELS = 6


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
    raise ValueError(
        f"add_inverse expects RGB images with 3 channels on axis {axis}, got shape "
        f"{images.shape}. Convert grayscale images to RGB first (repeat the channel).")
  return jnp.concatenate([images, 1.0 - images], axis=axis)


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
    raise ValueError(
        f"{model_name} expects NHWC images with {ENCODED_CHANNELS} channels "
        f"[r, g, b, 1-r, 1-g, 1-b], as bcos_jax.nn.add_inverse makes them; got shape "
        f"{tuple(x.shape)}.{hint}")
