"""How a 2-D convolution (NHWC input, HWIO kernel) is computed: by the path fastest for its shape.

The seven paths give the same values (up to the order of float summation):

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
- depthwise (one input channel per feature group, one output per group: ConvNeXt's
  7×7 convolutions): the sum over the kernel's taps of the shifted input times that
  tap's weights, which XLA fuses into one pass. XLA:CPU's grouped convolution is an
  order of magnitude slower there: ConvNeXt's first stage, 8 × 56² × 96, forward
  292 -> 16 ms, input gradient 315 -> 45, weight gradient 758 -> 189.
- strided stem (strides above 1 on at most `STEM_CHANNELS` input channels, one
  feature group, no dilation): XLA's convolution, whose input gradient (what an
  explanation adds) is computed instead as that of the same convolution written
  on the space-to-depth input, a stride-1 convolution. XLA:CPU's input gradient
  of a strided convolution with so few channels is slow: the 7×7, stride-2 stem
  of a ResNet or DenseNet on the 6-channel input, batch 8, 224², takes 136 ms
  against 49 ms (the forward and weight gradient stay XLA's: 40 against 147 ms
  and 123 against 229 ms written that way).
- grouped (feature groups of more than one channel, or more outputs than inputs
  per group: ResNeXt's 3×3 convolutions): XLA's grouped convolution forward (with
  at most `DENSE_GROUP_CHANNELS` per group, the dense one of the block-diagonal
  kernel), and both gradients from the same convolution written as im2col on the group-major
  input and one matrix product per group. XLA:CPU's grouped convolution is slow
  to differentiate, its weight gradient by two orders of magnitude: ResNeXt-50
  32×4d's first stage, 8 × 56² × 128 in 32 groups, both gradients 13.2 s against
  0.16 s, the input gradient alone 180 -> 63 ms.
- otherwise `jax.lax.conv_general_dilated`.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Pads = Sequence[tuple[int, int]]
# The most input channels of a strided convolution whose input gradient is taken on the
# space-to-depth input (a stem: the 6- or 3-channel image; at 128 channels XLA's own is
# faster).
STEM_CHANNELS = 32
# The most input channels per group of a grouped convolution whose forward is the dense
# convolution with a block-diagonal kernel: G× the arithmetic, yet faster on XLA:CPU
# than its grouped convolution (ResNeXt-50's first stage, 4 channels per group, batch 8:
# 43-54 against 128-179 ms; 8 per group: 1.2-1.7× faster at batch 8, up to 1.5× slower
# at batch 1; 16 per group: 2-3× slower).
DENSE_GROUP_CHANNELS = 8


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


def _padded(x: jax.Array, pads: Pads, value: float = 0.0) -> jax.Array:
  """`x` with its H and W padded by the (lo, hi) pairs `pads`, with `value`."""
  return jax.lax.pad(x, jnp.array(value, x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0),
                                                    (0, 0, 0)))


def placed_at_tap(values: jax.Array, top: int, left: int, padded_size: Sequence[int],
                  strides: Sequence[int]) -> jax.Array:
  """The transpose of one window tap's slice: (N, H', W', C) `values` put back at the
  padded input's (top + sh·y, left + sw·x) pixels, zeros elsewhere."""
  (_, ho, wo, _), (rows, cols), (sh, sw) = values.shape, padded_size, strides
  zero = jnp.zeros((), values.dtype)
  return jax.lax.pad(values, zero, ((0, 0, 0), (top, rows - top - (ho - 1) * sh - 1, sh - 1),
                                    (left, cols - left - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))


def window_taps(x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int], pads: Pads,
                dilation: Sequence[int] = (1, 1), pad_value: float = 0.0) -> list[jax.Array]:
  """The input each window position meets, (N, H', W', C) per position in the window's
  row-major (h, w) order: `x` padded with `pad_value`, sliced at the strides."""
  n, h, w, c = x.shape
  (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
  ho = output_size(h, kh, sh, pads[0], dh)
  wo = output_size(w, kw, sw, pads[1], dw)
  padded = _padded(x, pads, pad_value)
  return [jax.lax.slice(padded, (0, i * dh, j * dw, 0),
                        (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c),
                        (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]


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


def _xla(x, kernel, strides, pads, dilation=(1, 1), feature_group_count=1) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=tuple(pads), rhs_dilation=tuple(dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=feature_group_count)


def _space_to_depth(x: jax.Array, kernel: jax.Array, strides, pads) -> jax.Array:
  """The strided convolution as a stride-1 convolution of the space-to-depth input.

  With the kernel zero-padded to a multiple of the strides (sh, sw), tap (i, j) is
  (sh·q + a, sw·t + b): the input's rows and columns are split into their sh·sw phases
  (a, b), stacked as channels, and kernel phase (a, b) at (q, t) meets them at stride 1.
  """
  n, h, w, c = x.shape
  kh, kw, _, out = kernel.shape
  sh, sw = strides
  ho, wo = (output_size(h, kh, sh, pads[0], 1), output_size(w, kw, sw, pads[1], 1))
  kh2, kw2 = -(-kh // sh), -(-kw // sw)
  rows, cols = sh * (ho + kh2 - 1), sw * (wo + kw2 - 1)  # what the phases read
  padded = jax.lax.pad(x, jnp.zeros((), x.dtype),
                       ((0, 0, 0), (pads[0][0], rows - h - pads[0][0], 0),
                        (pads[1][0], cols - w - pads[1][0], 0), (0, 0, 0)))
  phases = padded.reshape(n, rows // sh, sh, cols // sw, sw, c).transpose(0, 1, 3, 2, 4, 5)
  kernel = jnp.pad(kernel, ((0, kh2 * sh - kh), (0, kw2 * sw - kw), (0, 0), (0, 0)))
  kernel = kernel.reshape(kh2, sh, kw2, sw, c, out).transpose(0, 2, 1, 3, 4, 5)
  return _xla(phases.reshape(n, rows // sh, cols // sw, sh * sw * c),
              kernel.reshape(kh2, kw2, sh * sw * c, out), (1, 1), ((0, 0), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _stem(x: jax.Array, kernel: jax.Array, strides, pads) -> jax.Array:
  return _xla(x, kernel, strides, pads)


def _stem_forward(x, kernel, strides, pads):
  return _xla(x, kernel, strides, pads), (x, kernel)


def _stem_backward(strides, pads, residuals, upstream):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _space_to_depth(x, kernel, strides, pads), x)
  _, kernel_vjp = jax.vjp(lambda kernel: _xla(x, kernel, strides, pads), kernel)
  return input_vjp(upstream)[0], kernel_vjp(upstream)[0]


_stem.defvjp(_stem_forward, _stem_backward)


def _shifted_sum(x, kernel, strides, pads, dilation) -> jax.Array:
  """A depthwise convolution as the sum over taps of the input each meets times its weights.

  Accumulated in float32 (bfloat16 inputs too), as a convolution accumulates.
  """
  kh, kw = kernel.shape[:2]
  wide = jnp.promote_types(x.dtype, jnp.float32)
  taps = window_taps(x, (kh, kw), strides, pads, dilation)
  weights = kernel.reshape(kh * kw, -1).astype(wide)
  total = functools.reduce(jnp.add, [tap.astype(wide) * w for tap, w in zip(taps, weights,
                                                                            strict=True)])
  return total.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise(x, kernel, strides, pads, dilation) -> jax.Array:
  return _shifted_sum(x, kernel, strides, pads, dilation)


def _depthwise_forward(x, kernel, strides, pads, dilation):
  # Only the input and kernel are kept for the backward pass: differentiated as it is,
  # the sum would keep every tap's shifted copy of the input (ConvNeXt-T's train step,
  # batch 8: 4.9 GiB of temporaries instead of 2.0, and 4× the compile time).
  return _shifted_sum(x, kernel, strides, pads, dilation), (x, kernel)


def _depthwise_backward(strides, pads, dilation, residuals, upstream):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _shifted_sum(x, kernel, strides, pads, dilation), x)
  # Tap (i, j)'s weight gradient is the sum of the padded input times the upstream
  # gradient placed where that tap met the input. Written with the taps' slices of the
  # input instead, XLA keeps all of them at once (the forward pass shares them): 461 MiB
  # of temporaries for one 8 × 56² × 96 layer against 20 this way.
  (kh, kw), (dh, dw) = kernel.shape[:2], dilation
  padded = _padded(x, pads)
  kernel_gradient = jnp.stack([
      jnp.sum(padded * placed_at_tap(upstream, i * dh, j * dw, padded.shape[1:3], strides),
              axis=(0, 1, 2), dtype=jnp.float32)
      for i in range(kh) for j in range(kw)])
  return input_vjp(upstream)[0], kernel_gradient.reshape(kernel.shape).astype(kernel.dtype)


_depthwise.defvjp(_depthwise_forward, _depthwise_backward)


def _group_major_im2col(x, kernel, strides, pads, dilation, feature_group_count) -> jax.Array:
  """A grouped convolution as one batched matrix product over the groups.

  The input is put group-major once, (G·N, H, W, C/G), so that each group's windows
  are one im2col matrix, (G, N·H'·W', kh·kw·C/G), multiplied by that group's kernel.
  """
  n, h, w, c = x.shape
  kh, kw, group_in, out = kernel.shape
  groups = feature_group_count
  group_out = out // groups
  grouped = x.reshape(n, h, w, groups, group_in).transpose(3, 0, 1, 2, 4)
  taps = window_taps(grouped.reshape(groups * n, h, w, group_in), (kh, kw), strides, pads, dilation)
  _, ho, wo, _ = taps[0].shape
  columns = jnp.concatenate(taps, axis=-1).reshape(groups, n * ho * wo, kh * kw * group_in)
  matrices = kernel.reshape(kh * kw * group_in, groups, group_out).transpose(1, 0, 2)
  products = jax.lax.dot_general(columns, matrices, (((2,), (1,)), ((0,), (0,))),
                                 preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
  products = products.astype(x.dtype).reshape(groups, n, ho, wo, group_out)
  return products.transpose(1, 2, 3, 0, 4).reshape(n, ho, wo, out)


def _block_diagonal(kernel: jax.Array, feature_group_count: int) -> jax.Array:
  """The grouped HWIO kernel as the one-group kernel that is zero between groups."""
  kh, kw, group_in, out = kernel.shape
  groups = feature_group_count
  blocks = kernel.reshape(kh, kw, group_in, groups, out // groups)
  dense = jnp.einsum("hwcgo,fg->hwfcgo", blocks, jnp.eye(groups, dtype=kernel.dtype))
  return dense.reshape(kh, kw, groups * group_in, out)


def _grouped_values(x, kernel, strides, pads, dilation, feature_group_count) -> jax.Array:
  if kernel.shape[2] <= DENSE_GROUP_CHANNELS:
    return _xla(x, _block_diagonal(kernel, feature_group_count), strides, pads, dilation)
  return _xla(x, kernel, strides, pads, dilation, feature_group_count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _grouped(x, kernel, strides, pads, dilation, feature_group_count) -> jax.Array:
  return _grouped_values(x, kernel, strides, pads, dilation, feature_group_count)


def _grouped_forward(x, kernel, strides, pads, dilation, feature_group_count):
  return _grouped_values(x, kernel, strides, pads, dilation, feature_group_count), (x, kernel)


def _grouped_backward(strides, pads, dilation, feature_group_count, residuals, upstream):
  x, kernel = residuals
  _, vjp = jax.vjp(lambda x, kernel: _group_major_im2col(x, kernel, strides, pads, dilation,
                                                         feature_group_count), x, kernel)
  return vjp(upstream)


_grouped.defvjp(_grouped_forward, _grouped_backward)


def path(x_shape: Sequence[int], kernel_shape: Sequence[int], strides: Sequence[int],
         pads: Pads, dilation: Sequence[int], feature_group_count: int) -> str:
  """The path `convolve` takes for these shapes (see the module docstring)."""
  (_, h, w, c), (kh, kw, _, out) = x_shape, kernel_shape
  outputs = [output_size(size, k, s, p, d) for size, k, s, p, d
             in zip((h, w), (kh, kw), strides, pads, dilation, strict=True)]
  extents = [d * (k - 1) + 1 for k, d in zip((kh, kw), dilation, strict=True)]
  unpadded = all(tuple(p) == (0, 0) for p in pads)
  undilated = tuple(dilation) == (1, 1)
  if min(outputs) < 1:
    return "xla"  # an empty output (an input smaller than the kernel) stays XLA's
  if is_pointwise((kh, kw), feature_group_count, pads):
    return "pointwise"
  if feature_group_count == 1 and (kh, kw) == tuple(strides) and unpadded and undilated:
    return "patchify"
  if feature_group_count > 1 and feature_group_count == c == out:
    return "depthwise"
  if feature_group_count == 1 and any(o < e for o, e in zip(outputs, extents, strict=True)):
    return "im2col"
  if feature_group_count == 1 and tuple(strides) != (1, 1) and c <= STEM_CHANNELS and undilated:
    return "stem"
  if feature_group_count > 1:
    return "grouped"
  return "xla"


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
  # Tuples: the custom_vjp paths take them as static (hashable) arguments.
  strides, dilation = tuple(strides), tuple(dilation)
  pads = tuple(tuple(p) for p in pads)
  kh, kw = kernel.shape[:2]
  chosen = path(x.shape, kernel.shape, strides, pads, dilation, feature_group_count)
  if chosen == "pointwise":
    return _matmul(strided_pixels(x, strides), kernel[0, 0])
  if chosen == "patchify":
    return _matmul(_tiles(x, strides), kernel.reshape(-1, kernel.shape[-1]))
  if chosen == "depthwise":
    return _depthwise(x, kernel, strides, pads, dilation)
  if chosen == "im2col":
    # The window's pixels in the HWIO kernel's (h, w, c) order, then one product.
    return _matmul(jnp.concatenate(window_taps(x, (kh, kw), strides, pads, dilation), axis=-1),
                   kernel.reshape(-1, kernel.shape[-1]))
  if chosen == "stem":
    return _stem(x, kernel, strides, pads)
  if chosen == "grouped":
    return _grouped(x, kernel, strides, pads, dilation, feature_group_count)
  return _xla(x, kernel, strides, pads, dilation, feature_group_count)
