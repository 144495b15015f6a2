"""The B-cos linear layer (v2 `BcosLinear`): B-cos on the last axis."""

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.nn.bcos_conv import PATCH_NORM_EPS, dynamic_scale, max_out, unit_norm


class BcosDense(nnx.Module):
  """out = |cos(x, ŵ)|^(B-1) · ŵ·x over the last axis; no bias.

  Args:
    in_features: size of the last input axis.
    out_features: outputs after MaxOut.
    b: alignment pressure B >= 1.
    max_out: linear units per output (consecutive, as in the official code).
    rngs: for the weight initialisation.
  """

  def __init__(self, in_features: int, out_features: int, *, b: float = 2.0, max_out: int = 1,
               rngs: nnx.Rngs):
    if b < 1:
      raise ValueError(f"B must be >= 1, got b={b}")
    self.in_features = in_features
    self.out_features = out_features
    self.b = float(b)
    self.max_out = max_out
    init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features * max_out),
                                 jnp.float32))

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    if x.shape[-1] != self.in_features:
      raise ValueError(f"BcosDense expects (..., {self.in_features}) inputs, got {x.shape}")
    kernel = unit_norm(self.kernel[...], axes=(0,)).astype(x.dtype)
    # As one (rows, in) matmul: XLA:CPU computes the weight gradient of a 3-D
    # (N, T, in) product ~1.5× slower (it contracts over two axes).
    out = (x.reshape(-1, x.shape[-1]) @ kernel).reshape(*x.shape[:-1], kernel.shape[-1])
    out = max_out(out, self.max_out)
    if self.b == 1:
      return out
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + PATCH_NORM_EPS)
    scale = dynamic_scale(out, norm, self.b)
    if explain:
      scale = jax.lax.stop_gradient(scale)
    return scale * out
