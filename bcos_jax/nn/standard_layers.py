"""The conventional layers of the baselines and of the networks B-cosification starts from.

They take (and ignore) `explain`, so one model file builds both a B-cos
network and its conventional counterpart from the same blocks; their
attribute names (`kernel`, `bias`, `linear`) are those the key maps read.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.nn import backward_rules, convolution
from bcos_jax.nn.bcos_conv import Padding, explicit_padding, pair

# The ReLU of the official modules: attribution methods may trace it with a modified
# backward pass (`bcos_jax.nn.backward_rules`).
ACTIVATIONS = {"none": lambda x: x, "relu": backward_rules.relu}


def activation(name: str):
  """The activation `name` ("none": B-cos layers are non-linear themselves; "relu")."""
  if name not in ACTIVATIONS:
    raise UserError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class StandardConv(nnx.Module):
  """An ordinary 2-D convolution (NHWC, HWIO kernel), torch's padding semantics.

  Initialised as torchvision's ResNets and DenseNets are (He normal, fan out).
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int] = 1,
               *, strides: int | Sequence[int] = 1, padding: Padding = 0,
               feature_group_count: int = 1, use_bias: bool = False, rngs: nnx.Rngs):
    self.in_features = in_features
    self.kernel_size = pair(kernel_size, "kernel_size")
    self.strides = pair(strides, "strides")
    self.padding = padding
    self.feature_group_count = feature_group_count
    init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
    shape = (*self.kernel_size, in_features // feature_group_count, out_features)
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    del explain  # nothing is dynamic
    pads = explicit_padding(self.padding, x.shape[1:3], self.kernel_size, self.strides, (1, 1))
    y = convolution.convolve(x, self.kernel[...].astype(x.dtype), strides=self.strides,
                             pads=pads, feature_group_count=self.feature_group_count)
    return y if self.bias is None else y + self.bias[...].astype(x.dtype)


class StandardDense(nnx.Module):
  """An ordinary linear map (torch's `nn.Linear` initialisation)."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
               rngs: nnx.Rngs):
    self.linear = nnx.Linear(in_features, out_features, use_bias=use_bias, rngs=rngs)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    del explain
    return self.linear(x)
