"""B-cos ConvNeXts (v2 hub names): torchvision's ConvNeXt without GELU.

Blocks: 7×7 depthwise B-cos conv, norm, 1×1 B-cos conv to 4×, 1×1 back,
times a per-channel layer scale, plus the input. The hub models use a
PositionNorm without bias (eps 1e-6; `convnext_tiny`, `convnext_base`) or an
uncentered BatchNorm without bias (`*_bnu`). The classifier (norm, 1×1
B-cos conv) runs at every position before global average pooling.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.nn import BcosConv, LogitLayer, check_encoded, make_norm
from bcos_jax.nn.stochastic_depth import StochasticDepth

POSITION_NORM = "NoBias(DetachablePositionNorm2d)"
BATCH_NORM = "NoBias(BatchNormUncentered2d)"


def _norm(name: str, features: int) -> nnx.Module:
  # The official default PositionNorm uses eps 1e-6; a BatchNorm passed in keeps 1e-5.
  return make_norm(name, features, **({"eps": 1e-6} if name == POSITION_NORM else {}))


class CNBlock(nnx.Module):
  def __init__(self, dim, *, layer_scale, drop_rate, b, norm, rngs):
    self.dwconv = BcosConv(dim, dim, 7, padding=3, feature_group_count=dim, b=b, rngs=rngs)
    self.norm = _norm(norm, dim)
    self.pwconv1 = BcosConv(dim, 4 * dim, 1, b=b, rngs=rngs)
    self.pwconv2 = BcosConv(4 * dim, dim, 1, b=b, rngs=rngs)
    self.layer_scale = nnx.Param(jnp.full((dim,), layer_scale, jnp.float32))
    self.drop_path = StochasticDepth(drop_rate, rngs=rngs)

  def __call__(self, x, *, explain=False):
    y = self.norm(self.dwconv(x, explain=explain), explain=explain)
    y = self.pwconv2(self.pwconv1(y, explain=explain), explain=explain)
    return self.drop_path(self.layer_scale[...] * y) + x


class Downsample(nnx.Module):
  def __init__(self, c_in, c_out, *, b, norm, rngs):
    self.norm = _norm(norm, c_in)
    self.conv = BcosConv(c_in, c_out, 2, strides=2, b=b, rngs=rngs)

  def __call__(self, x, *, explain=False):
    return self.conv(self.norm(x, explain=explain), explain=explain)


class BcosConvNeXt(nnx.Module):
  """A B-cos ConvNeXt on NHWC images encoded with `add_inverse`.

  Args:
    dims: channels of the four stages.
    depths: blocks per stage.
    num_classes: logits.
    layer_scale: initial value of the blocks' layer scale.
    stochastic_depth_prob: the last block's rate of dropping its branch while
      training (rates grow linearly from 0; the official recipes train
      tiny with 0.1 and base with 0.5).
    b: alignment pressure of every B-cos conv.
    norm: a `bcos_jax.nn.NORM_LAYERS` name.
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, dims: Sequence[int] = (96, 192, 384, 768),
               depths: Sequence[int] = (3, 3, 9, 3), num_classes: int = 1000,
               layer_scale: float = 1e-6, stochastic_depth_prob: float = 0.0, b: float = 2.0,
               norm: str = POSITION_NORM,
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               rngs: nnx.Rngs):
    if len(dims) != len(depths):
      raise ValueError(f"need one width per stage: dims={dims}, depths={depths}")
    self.stem = BcosConv(6, dims[0], 4, strides=4, b=b, rngs=rngs)
    self.stem_norm = _norm(norm, dims[0])
    total = sum(depths)
    rates = iter(stochastic_depth_prob * i / max(total - 1, 1) for i in range(total))
    self.stages = nnx.List([
        nnx.List([CNBlock(dim, layer_scale=layer_scale, drop_rate=next(rates), b=b, norm=norm,
                          rngs=rngs) for _ in range(depth)])
        for dim, depth in zip(dims, depths, strict=True)])
    self.downsamples = nnx.List([Downsample(c_in, c_out, b=b, norm=norm, rngs=rngs)
                                 for c_in, c_out in zip(dims[:-1], dims[1:], strict=True)])
    self.head_norm = _norm(norm, dims[-1])
    self.head = BcosConv(dims[-1], num_classes, 1, b=b, rngs=rngs)
    bias = -math.log(num_classes - 1) if logit_bias is None else logit_bias
    self.logit_layer = LogitLayer(logit_temperature, bias)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosConvNeXt")
    x = self.stem_norm(self.stem(x, explain=explain), explain=explain)
    for i, stage in enumerate(self.stages):
      for block in stage:
        x = block(x, explain=explain)
      if i < len(self.downsamples):
        x = self.downsamples[i](x, explain=explain)
    x = self.head(self.head_norm(x, explain=explain), explain=explain)
    return self.logit_layer(x.mean(axis=(1, 2)))


_SIZES = {"tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
          "base": ((128, 256, 512, 1024), (3, 3, 27, 3))}


def _register() -> None:
  for size, (dims, depths) in _SIZES.items():
    registry.register(f"convnext_{size}", BcosConvNeXt, dims=dims, depths=depths)
    registry.register(f"convnext_{size}_bnu", BcosConvNeXt, dims=dims, depths=depths,
                      norm=BATCH_NORM)


_register()
