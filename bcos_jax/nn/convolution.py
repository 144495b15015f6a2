"""How a 2-D convolution (NHWC input, HWIO kernel) is computed: by the path fastest for its shape.

The four paths give the same values (up to the order of float summation):

- pointwise (a 1×1 kernel, one feature group, no padding): each output sees one
  pixel, so the convolution is one (pixels, in) × (in, out) matrix product of the
  strided pixels. On XLA:CPU it is ~2× faster than the convolution (forward; its
  weight gradient 2-5×, ../shared/perf), and the 2-D form's weight gradient beats
  a 4-D einsum's 1.2-3× (one contracted axis).
- patchify (the kernel as large as the strides, one feature group, no padding nor
  dilation: ConvNeXt's stem and downsampling layers): the windows tile the image,
  so the convolution is a reshape and one matrix product. On XLA:CPU, for the
  ConvNeXt layers at batch 8, 224², forward 31 -> 24 ms summed, input gradient
  27 -> 18, weight gradient 67 -> 31.
- small output (an output side shorter than the kernel's extent on that axis, one
  feature group): im2col, then one matrix product. XLA:CPU's convolution falls off
  a cliff there: a 3×3 convolution with a 2×2 output, 512 -> 512 channels at batch
  16 (the last stage of a ResNet on 64² images) takes 110 ms against 3.8 ms as a
  matrix product; 7×7 kernels with 2-6 pixel outputs 3-10×. From an output as
  large as the kernel on, the convolution is as fast or faster.
- otherwise `jax.lax.conv_general_dilated`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Pads = Sequence[tuple[int, int]]


def is_pointwise(kernel_size: Sequence[int], feature_group_count: int, pads: Pads) -> bool:
  """A 1×1 convolution of one feature group without padding: each output sees one pixel."""
  return (tuple(kernel_size) == (1, 1) and feature_group_count == 1
          and all(tuple(p) == (0, 0) for p in pads))


def strided_pixels(x: jax.Array, strides: Sequence[int]) -> jax.Array:
  """The pixels a pointwise convolution's outputs see (its window strides)."""
  sh, sw = strides
  return x if (sh, sw) == (1, 1) else x[:, ::sh, ::sw, :]


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int) -> int:
  """The number of windows along one axis (torch's and XLA's formula)."""
  return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def _patches(x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int], pads: Pads,
             dilation: Sequence[int]) -> jax.Array:
  """im2col: (N, H', W', kh·kw·C), the window's pixels in the HWIO kernel's (h, w, c) order."""
  n, h, w, c = x.shape
  (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
  ho = output_size(h, kh, sh, pads[0], dh)
  wo = output_size(w, kw, sw, pads[1], dw)
  padded = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0),
                                                    (0, 0, 0)))
  taps = [jax.lax.slice(padded, (0, i * dh, j * dw, 0),
                        (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c),
                        (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return jnp.concatenate(taps, axis=-1)


def _tiles(x: jax.Array, strides: Sequence[int]) -> jax.Array:
  """The non-overlapping (sh, sw) windows as pixels: (N, H // sh, W // sw, sh·sw·C), in the
  HWIO kernel's (h, w, c) order (rows and columns past the last whole window are dropped,
  as the convolution drops them)."""
  n, h, w, c = x.shape
  sh, sw = strides
  ho, wo = h // sh, w // sw
  tiles = x[:, :ho * sh, :wo * sw].reshape(n, ho, sh, wo, sw, c).transpose(0, 1, 3, 2, 4, 5)
  return tiles.reshape(n, ho, wo, sh * sw * c)


def _matmul(pixels: jax.Array, matrix: jax.Array) -> jax.Array:
  """(N, H, W, K) @ (K, O) as one 2-D product (the fast form of its weight gradient)."""
  out = pixels.reshape(-1, pixels.shape[-1]) @ matrix
  return out.reshape(*pixels.shape[:-1], matrix.shape[-1])


def convolve(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int], pads: Pads,
             dilation: Sequence[int] = (1, 1), feature_group_count: int = 1) -> jax.Array:
  """The convolution of NHWC `x` with the HWIO `kernel` (explicit (lo, hi) pads).

  Args:
    x: (N, H, W, C).
    kernel: (kh, kw, C / feature_group_count, O), in `x`'s dtype.
    strides, dilation: pairs (dilation of the kernel).
    pads: ((lo, hi), (lo, hi)) zero padding of H and W.
    feature_group_count: feature groups (C for depthwise).

  Returns:
    (N, H', W', O).
  """
  kh, kw = kernel.shape[:2]
  if is_pointwise((kh, kw), feature_group_count, pads):
    return _matmul(strided_pixels(x, strides), kernel[0, 0])
  if ((kh, kw) == tuple(strides) and feature_group_count == 1 and tuple(dilation) == (1, 1)
      and all(tuple(p) == (0, 0) for p in pads) and x.shape[1] >= kh and x.shape[2] >= kw):
    return _matmul(_tiles(x, strides), kernel.reshape(-1, kernel.shape[-1]))
  extents = [d * (k - 1) + 1 for k, d in zip((kh, kw), dilation, strict=True)]
  outputs = [output_size(size, k, s, p, d) for size, k, s, p, d
             in zip(x.shape[1:3], (kh, kw), strides, pads, dilation, strict=True)]
  # (An empty output, an input smaller than the kernel, stays XLA's.)
  if (feature_group_count == 1 and min(outputs) > 0
      and any(o < e for o, e in zip(outputs, extents, strict=True))):
    return _matmul(_patches(x, (kh, kw), strides, pads, dilation),
                   kernel.reshape(-1, kernel.shape[-1]))
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=tuple(pads), rhs_dilation=tuple(dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=feature_group_count)
