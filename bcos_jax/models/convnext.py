"""B-cos ConvNeXts (v2 hub names): torchvision's ConvNeXt without GELU.

Blocks: 7×7 depthwise B-cos conv, norm, 1×1 B-cos conv to 4×, 1×1 back,
times a per-channel layer scale, plus the input. The hub models use a
PositionNorm without bias (eps 1e-6; `convnext_tiny`, `convnext_base`) or an
uncentered BatchNorm without bias (`*_bnu`). The classifier (norm, 1×1
B-cos conv) runs at every position before global average pooling.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.torch_keys import KeyMap, Target, conv_keys, norm_keys
from bcos_jax.nn import ConvOptions, LogitLayer, StochasticDepth, check_encoded, make_norm
from bcos_jax.nn.remat import RECOMPUTED_CALL, Rematerialisable, call_block

POSITION_NORM = "NoBias(DetachablePositionNorm2d)"
BATCH_NORM = "NoBias(BatchNormUncentered2d)"


def _norm(name: str, features: int) -> nnx.Module:
  # The official default PositionNorm uses eps 1e-6; a BatchNorm passed in keeps 1e-5.
  return make_norm(name, features, **({"eps": 1e-6} if name == POSITION_NORM else {}))


class CNBlock(nnx.Module):
  def __init__(self, dim, *, layer_scale, drop_rate, conv: ConvOptions, norm, rngs):
    self.dwconv = conv.conv(dim, dim, 7, padding=3, groups=dim, rngs=rngs)
    self.norm = _norm(norm, dim)
    self.pwconv1 = conv.conv(dim, 4 * dim, 1, rngs=rngs)
    self.pwconv2 = conv.conv(4 * dim, dim, 1, rngs=rngs)
    self.layer_scale = nnx.Param(jnp.full((dim,), layer_scale, jnp.float32))
    self.drop_path = StochasticDepth(drop_rate, rngs=rngs)

  def __call__(self, x, *, explain=False):
    y = self.norm(self.dwconv(x, explain=explain), explain=explain)
    y = self.pwconv2(self.pwconv1(y, explain=explain), explain=explain)
    return self.drop_path(self.layer_scale[...] * y) + x


class Downsample(nnx.Module):
  def __init__(self, c_in, c_out, *, conv: ConvOptions, norm, rngs):
    self.norm = _norm(norm, c_in)
    self.conv = conv.conv(c_in, c_out, 2, strides=2, rngs=rngs)

  def __call__(self, x, *, explain=False):
    return self.conv(self.norm(x, explain=explain), explain=explain)


class BcosConvNeXt(nnx.Module, Rematerialisable):
  """A B-cos ConvNeXt on NHWC images encoded with `add_inverse`.

  Args:
    widths: channels of the four stages.
    depths: blocks per stage.
    num_classes: logits.
    layer_scale: initial value of the blocks' layer scale.
    stochastic_depth_prob: the last block's rate of dropping its branch while
      training (rates grow linearly from 0; the official recipes train
      tiny with 0.1 and base with 0.5).
    b: alignment pressure of every B-cos conv.
    norm: a `bcos_jax.nn.NORM_LAYERS` name.
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    remat: recompute every block in the backward pass while training
      (`bcos_jax.nn.remat`).
    rngs: initialisation randomness.
  """

  def __init__(self, *, widths: Sequence[int] = (96, 192, 384, 768),
               depths: Sequence[int] = (3, 3, 9, 3), num_classes: int = 1000,
               layer_scale: float = 1e-6, stochastic_depth_prob: float = 0.0, b: float = 2.0,
               norm: str = POSITION_NORM,
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               remat: bool = False, rngs: nnx.Rngs):
    if len(widths) != len(depths):
      raise UserError(f"need one width per stage: widths={widths}, depths={depths}")
    conv = ConvOptions(b=b)
    self.remat, self.deterministic = remat, False
    self.stem = conv.conv(6, widths[0], 4, strides=4, rngs=rngs)
    self.stem_norm = _norm(norm, widths[0])
    total = sum(depths)
    rates = iter(stochastic_depth_prob * i / max(total - 1, 1) for i in range(total))
    self.stages = nnx.List([
        nnx.List([CNBlock(dim, layer_scale=layer_scale, drop_rate=next(rates), conv=conv,
                          norm=norm, rngs=rngs) for _ in range(depth)])
        for dim, depth in zip(widths, depths, strict=True)])
    self.downsamples = nnx.List([Downsample(c_in, c_out, conv=conv, norm=norm, rngs=rngs)
                                 for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)])
    self.head_norm = _norm(norm, widths[-1])
    self.head = conv.conv(widths[-1], num_classes, 1, rngs=rngs)
    self.logit_layer = LogitLayer(logit_temperature, logit_bias, num_classes)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosConvNeXt")
    x = self.stem_norm(self.stem(x, explain=explain), explain=explain)
    block_on = RECOMPUTED_CALL if self.recomputes() else call_block
    for i, stage in enumerate(self.stages):
      for block in stage:
        x = block_on(block, x, explain)
      if i < len(self.downsamples):
        x = self.downsamples[i](x, explain=explain)
    x = self.head(self.head_norm(x, explain=explain), explain=explain)
    return self.logit_layer(x.mean(axis=(1, 2)))


def torch_keys(model: BcosConvNeXt, p: str) -> KeyMap:
  """torchvision's names: features (stem conv, stem norm, then stage, downsample, ...),
  classifier (norm, conv)."""
  keys = conv_keys(f"{p}features.0", ("stem",))
  keys |= norm_keys(f"{p}features.1", ("stem_norm",), model.stem_norm)
  index = 2
  for s, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      prefix, path = f"{p}features.{index}.{j}", ("stages", s, j)
      keys[f"{prefix}.layer_scale"] = Target((*path, "layer_scale"), "layer_scale")
      keys |= conv_keys(f"{prefix}.block.0", (*path, "dwconv"))
      keys |= norm_keys(f"{prefix}.block.1", (*path, "norm"), block.norm)
      keys |= conv_keys(f"{prefix}.block.2", (*path, "pwconv1"))
      keys |= conv_keys(f"{prefix}.block.3", (*path, "pwconv2"))
    index += 1
    if s < len(model.downsamples):
      down = model.downsamples[s]
      keys |= norm_keys(f"{p}features.{index}.0", ("downsamples", s, "norm"), down.norm)
      keys |= conv_keys(f"{p}features.{index}.1", ("downsamples", s, "conv"))
      index += 1
  keys |= norm_keys(f"{p}classifier.0", ("head_norm",), model.head_norm)
  return keys | conv_keys(f"{p}classifier.1", ("head",))


FAMILY = registry.Family("convnext", BcosConvNeXt, torch_keys,
                         grad_cam_layer=lambda model: ("head_norm", "input"))

_TINY = dict(widths=(96, 192, 384, 768), depths=(3, 3, 9, 3))
_BASE = dict(widths=(128, 256, 512, 1024), depths=(3, 3, 27, 3))
registry.register("convnext_tiny", FAMILY, **_TINY)
registry.register("convnext_base", FAMILY, **_BASE)
registry.register("convnext_tiny_bnu", FAMILY, norm=BATCH_NORM, **_TINY)
registry.register("convnext_base_bnu", FAMILY, norm=BATCH_NORM, **_BASE)
