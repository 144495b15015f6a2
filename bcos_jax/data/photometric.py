"""The v1 recipe's photometric tail (ColorJitter, PCA lighting) on the device.

The v1 ImageNet recipe ends with ColorJitter and PCA lighting, after every
geometric op: per-pixel work that costs a host worker about as much as the
RandAugment and the crop before it (`bench/input_pipeline.py`), and that an
accelerator does for free inside the training step. With
`config.photometric_on_device`, the host transform stops before them and
sends their draws with the image (from grain's per-record generator, in the
same order, so a run's random numbers do not change), and `apply` runs them in
the jitted step. Given the same draws, the result is the host's
(`augment.apply_color_jitter`, `augment.apply_lighting`) up to float rounding:
a pixel level at most, on a few pixels.
"""

import jax
import jax.numpy as jnp

# The keys of the draws the host transform adds to a record.
JITTER, LIGHTING = "color_jitter", "lighting"
_GREY = (0.299, 0.587, 0.114)


def _grey(pixels: jax.Array) -> jax.Array:
  """(H, W) from (H, W, 3) float32, OpenCV's RGB2GRAY weights."""
  return pixels[..., 0] * _GREY[0] + pixels[..., 1] * _GREY[1] + pixels[..., 2] * _GREY[2]


def _brightness(pixels, factor):
  return pixels * factor


def _contrast(pixels, factor):
  return pixels * factor + (1 - factor) * _grey(pixels).mean()


def _saturation(pixels, factor):
  return pixels * factor + (1 - factor) * _grey(pixels)[..., None]


def color_jitter(image: jax.Array, draws: jax.Array) -> jax.Array:
  """One image's ColorJitter: uint8 (H, W, 3), draws float32 (6,) -> uint8 (H, W, 3)."""
  factors, order = draws[:3], draws[3:].astype(jnp.int32)

  def op(position, pixels):
    index = order[position]
    pixels = jax.lax.switch(index, (_brightness, _contrast, _saturation), pixels, factors[index])
    return jnp.clip(pixels, 0, 255)

  pixels = jax.lax.fori_loop(0, 3, op, image.astype(jnp.float32))
  return jnp.rint(pixels).astype(jnp.uint8)


def lighting(image: jax.Array, shift: jax.Array) -> jax.Array:
  """One image's PCA lighting: uint8 (H, W, 3) + shift float32 (3,) levels, saturating."""
  return jnp.clip(image.astype(jnp.float32) + shift, 0, 255).astype(jnp.uint8)


def apply(batch: dict) -> dict:
  """The batch with its images jittered and lit by their draws (which it then drops).

  Args:
    batch: {"image": uint8 (B, H, W, 3), "color_jitter": (B, 6), "lighting": (B, 3), ...}.
  """
  batch = dict(batch)
  jitter, shift = batch.pop(JITTER), batch.pop(LIGHTING)
  images = jax.vmap(color_jitter)(batch["image"], jitter)
  batch["image"] = jax.vmap(lighting)(images, shift)
  return batch
