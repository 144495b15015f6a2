"""The B-cos convolution (Eq. (9) and Alg. 1 of the CVPR 2022 paper).

out = |cos(x, ŵ)|^(B-1) · (ŵ·x) / scale, for each output unit ŵ (unit norm),
where cos is taken between ŵ and the input patch the unit sees. MaxOut over
`max_out` consecutive linear units picks the output, as in the official code.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.nn import convolution

# Added inside the square root of the patch norm (the official value): keeps
# the norm of an all-zero patch from producing NaN gradients.
PATCH_NORM_EPS = 1e-6
# Added to |cos| when B != 2 (the official value): keeps |cos|^(B-1) from
# having an infinite derivative at cos = 0 for B < 2.
ABS_COS_EPS = 1e-6

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
  return value


def explicit_padding(
    padding: Padding, spatial_shape: Sequence[int], kernel_size: Sequence[int],
    strides: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Turns 'SAME' / 'VALID' / int / pair / pairs into ((lo, hi), (lo, hi)).

  The convolution and the patch norm must see exactly the same zero padding,
  so both use the explicit pairs this returns.
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID', an int, a pair or two pairs, "
                       f"got {padding!r}")
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation, strict=True)]
    return tuple(jax.lax.padtype_to_pads(spatial_shape, dilated, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) == 2 and all(isinstance(p, int) for p in padding):
    return tuple((p, p) for p in padding)
  if len(padding) == 2 and all(len(p) == 2 for p in padding):
    return tuple((int(lo), int(hi)) for lo, hi in padding)
  raise ValueError(f"padding must be 'SAME', 'VALID', an int, a pair or two pairs, got {padding!r}")


def v1_scale(kernel_size: Sequence[int], in_features: int, divisor: float) -> float:
  """The v1 per-layer output scale sqrt(kh·kw)·sqrt(in)/divisor (the official v1 models
  divide by 100, the VGG by 1000, the Inception by 200)."""
  return math.sqrt(math.prod(kernel_size)) * math.sqrt(in_features) / divisor


def max_out(linear_out: jax.Array, units: int) -> jax.Array:
  """MaxOut over groups of `units` consecutive channels on the last axis.

  As an elementwise maximum of strided slices rather than a max over a reshaped
  axis: the same values and gradients, and XLA:CPU differentiates it 13× faster
  (the v1 CIFAR net's MaxOut gradients: 73 ms against 0.98 s at batch 64).
  """
  if units == 1:
    return linear_out
  return functools.reduce(jnp.maximum, [linear_out[..., j::units] for j in range(units)])


def dynamic_scale(linear_out: jax.Array, norm: jax.Array, b: float | jax.Array) -> jax.Array:
  """|cos|^(B-1), with cos = (ŵ·x)/||x|| (ŵ has unit norm); B a number or a learned scalar."""
  if isinstance(b, (int, float)) and b == 2:
    return jnp.abs(linear_out) / norm
  abs_cos = jnp.abs(linear_out / norm) + ABS_COS_EPS
  return abs_cos ** (b - 1)


def unit_norm(kernel: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Divides each output unit's weights by their L2 norm (no epsilon, as official)."""
  return kernel / jnp.sqrt(jnp.sum(kernel**2, axis=axes, keepdims=True))


class BcosConv(nnx.Module):
  """B-cos 2-D convolution on NHWC inputs; no bias, by design.

  Args:
    in_features: input channels.
    out_features: output channels (after MaxOut).
    kernel_size: int or (kh, kw).
    strides: int or pair.
    padding: 'SAME', 'VALID', an int, a pair or two (lo, hi) pairs.
    dilation: int or pair (kernel dilation).
    feature_group_count: feature groups (`in_features` for depthwise).
    b: the alignment pressure B >= 1; B = 1 is the plain normalised linear map.
    max_out: linear units per output channel, reduced by MaxOut.
    scale: a fixed divisor of every output (v2 models: 1; the v1 CIFAR-10 net:
      its per-B constant).
    v1_scale_divisor: when set, the divisor is instead the v1 per-layer scale
      `sqrt(kh·kw)·sqrt(in_features)/v1_scale_divisor` (`v1_scale`).
    unit_norm_kernel: normalise each unit's weights (B-cos); False keeps the raw
      kernel, as B-cosification does with a pretrained one (its "B-cosify" layers).
    use_bias: add a bias to the linear output before the dynamic scale (the
      B-cosification ablation that keeps the pretrained biases; no longer exact).
    learn_b: B becomes a trainable scalar starting at `b`, clamped at 1 + 1e-6 (the
      B-cosification ablation).
    rngs: for the weight initialisation.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int] = 1,
               *, strides: int | Sequence[int] = 1, padding: Padding = 0,
               dilation: int | Sequence[int] = 1, feature_group_count: int = 1,
               b: float = 2.0, max_out: int = 1, scale: float = 1.0,
               v1_scale_divisor: float | None = None, unit_norm_kernel: bool = True,
               use_bias: bool = False, learn_b: bool = False, rngs: nnx.Rngs):
    if b < 1:
      raise ValueError(f"B must be >= 1, got b={b}")
    if max_out < 1:
      raise ValueError(f"max_out must be >= 1, got {max_out}")
    if in_features % feature_group_count or (out_features * max_out) % feature_group_count:
      raise ValueError(
          f"feature_group_count={feature_group_count} must divide in_features={in_features} "
          f"and out_features*max_out={out_features * max_out}")
    if feature_group_count > 1 and out_features % feature_group_count:
      raise ValueError(
          f"with feature groups, out_features={out_features} must be a multiple of "
          f"feature_group_count={feature_group_count} so each output has one patch norm")
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = pair(kernel_size, "kernel_size")
    self.strides = pair(strides, "strides")
    self.dilation = pair(dilation, "dilation")
    self.padding = padding
    explicit_padding(padding, (1, 1), self.kernel_size, self.strides, self.dilation)  # validates
    self.feature_group_count = feature_group_count
    self.b = float(b)
    self.max_out = max_out
    self.scale = (float(scale) if v1_scale_divisor is None
                  else v1_scale(self.kernel_size, in_features, v1_scale_divisor))
    kernel_shape = (*self.kernel_size, in_features // feature_group_count, out_features * max_out)
    # Fan-in scaled normal; the scale is irrelevant to the output (ŵ is
    # normalised) but keeps Adam's relative step sizes as in PyTorch.
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    self.kernel = nnx.Param(init(rngs.params(), kernel_shape, jnp.float32))
    self.unit_norm_kernel = unit_norm_kernel
    self.bias = (nnx.Param(jnp.zeros((out_features * max_out,), jnp.float32)) if use_bias
                 else None)
    self.learned_b = nnx.Param(jnp.asarray(self.b, jnp.float32)) if learn_b else None

  def _pads(self, x: jax.Array) -> tuple[tuple[int, int], ...]:
    return explicit_padding(self.padding, x.shape[1:3], self.kernel_size, self.strides,
                            self.dilation)

  def linear(self, x: jax.Array) -> jax.Array:
    """ŵ·x for every linear unit (before MaxOut): (N, H', W', out·max_out)."""
    kernel = self.kernel[...]
    if self.unit_norm_kernel:
      kernel = unit_norm(kernel, axes=(0, 1, 2))
    out = convolution.convolve(x, kernel.astype(x.dtype), strides=self.strides,
                               pads=self._pads(x), dilation=self.dilation,
                               feature_group_count=self.feature_group_count)
    return out if self.bias is None else out + self.bias[...].astype(x.dtype)

  def patch_norm(self, x: jax.Array) -> jax.Array:
    """||x|| of the patch each output sees: (N, H', W', out) or broadcastable.

    The sum runs over the window with the convolution's padding, stride and
    dilation (zero padding adds nothing, as in the convolution), and over the
    input channels of the output's feature group.
    """
    pads = self._pads(x)
    if convolution.is_pointwise(self.kernel_size, self.feature_group_count, pads):
      # The patch is one pixel: a channel sum, no window.
      strided = convolution.strided_pixels(x, self.strides)
      return jnp.sqrt(jnp.sum(strided * strided, axis=-1, keepdims=True) + PATCH_NORM_EPS)
    n, h, w, c = x.shape
    groups = self.feature_group_count
    squares = jnp.sum((x * x).reshape(n, h, w, groups, c // groups), axis=-1)
    sums = jax.lax.reduce_window(
        squares, 0.0, jax.lax.add, window_dimensions=(1, *self.kernel_size, 1),
        window_strides=(1, *self.strides, 1), padding=((0, 0), *pads, (0, 0)),
        window_dilation=(1, *self.dilation, 1))
    norms = jnp.sqrt(sums + PATCH_NORM_EPS)
    if groups > 1:
      # Output channel o belongs to group o // (out / groups).
      norms = jnp.repeat(norms, self.out_features // groups, axis=-1)
    return norms

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    """Applies the layer.

    Args:
      x: (N, H, W, in_features).
      explain: explanation mode: |cos|^(B-1) is treated as a constant, so the
        layer is exactly linear for the gradient and grad = W(x).
    """
    if x.ndim != 4 or x.shape[-1] != self.in_features:
      raise ValueError(f"BcosConv expects (N, H, W, {self.in_features}) inputs, got {x.shape}")
    out = max_out(self.linear(x), self.max_out)
    if self.learned_b is not None or self.b != 1:
      scale = dynamic_scale(out, self.patch_norm(x), self.b if self.learned_b is None
                            else jnp.maximum(self.learned_b[...], 1 + ABS_COS_EPS))
      if explain:
        scale = jax.lax.stop_gradient(scale)
      out = scale * out
    return out / self.scale if self.scale != 1 else out
