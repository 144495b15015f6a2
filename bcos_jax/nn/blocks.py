"""Blocks the model families share: the options of a model's B-cos convs, conv + norm.

Every family passes its convs' options down as one `ConvOptions`, so "the
B of every layer", "MaxOut" and "the v1 per-layer scale" mean the same in
every model file.
"""

import dataclasses

import jax
from flax import nnx

from bcos_jax.nn.bcos_conv import BcosConv, Padding
from bcos_jax.nn.norms import make_norm
from bcos_jax.nn.standard_layers import StandardConv


@dataclasses.dataclass(frozen=True)
class ConvOptions:
  """What every B-cos conv of one model shares.

  Attributes:
    b: the alignment pressure.
    max_out: linear units per output channel (v1: 2).
    scale: a fixed divisor of every conv's output (v2: 1).
    v1_scale_divisor: when set, each conv divides by the v1 per-layer scale
      sqrt(k·k)·sqrt(in)/v1_scale_divisor instead (`bcos_jax.nn.v1_scale`).
    bcos: False builds ordinary convolutions (the conventional networks).
    unit_norm_kernels: False keeps raw kernels (B-cosified pretrained networks).
    learn_b: every conv learns its own B, starting at `b`.
  """
  b: float = 2.0
  max_out: int = 1
  scale: float = 1.0
  v1_scale_divisor: float | None = None
  bcos: bool = True
  unit_norm_kernels: bool = True
  learn_b: bool = False

  def conv(self, c_in: int, c_out: int, kernel, *, rngs: nnx.Rngs, strides=1,
           padding: Padding = 0, groups: int = 1,
           use_bias: bool = False) -> BcosConv | StandardConv:
    if not self.bcos:
      return StandardConv(c_in, c_out, kernel, strides=strides, padding=padding,
                          feature_group_count=groups, use_bias=use_bias, rngs=rngs)
    return BcosConv(c_in, c_out, kernel, strides=strides, padding=padding,
                    feature_group_count=groups, b=self.b, max_out=self.max_out,
                    scale=self.scale, v1_scale_divisor=self.v1_scale_divisor,
                    unit_norm_kernel=self.unit_norm_kernels, use_bias=use_bias,
                    learn_b=self.learn_b, rngs=rngs)


def optional_norm(name: str, features: int, **kwargs) -> nnx.Module | None:
  """The norm layer `name` (a `NORM_LAYERS` name), or None for "" (the v1 models have none)."""
  return make_norm(name, features, **kwargs) if name else None


def apply_norm(norm: nnx.Module | None, x: jax.Array, *, explain: bool) -> jax.Array:
  return x if norm is None else norm(x, explain=explain)


class ConvNorm(nnx.Module):
  """A B-cos conv (same padding for odd kernels), then the model's norm layer or none.

  Attributes follow the official names: `conv`, `norm`.
  """

  def __init__(self, c_in: int, c_out: int, kernel: int, *, conv: ConvOptions, norm: str,
               rngs: nnx.Rngs, strides: int = 1, groups: int = 1):
    self.conv = conv.conv(c_in, c_out, kernel, strides=strides, padding=kernel // 2,
                          groups=groups, rngs=rngs)
    self.norm = optional_norm(norm, c_out)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    return apply_norm(self.norm, self.conv(x, explain=explain), explain=explain)
