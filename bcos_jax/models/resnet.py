"""B-cos ResNets and ResNeXts: v2 (TPAMI 2024, torch.hub names) and v1 (CVPR 2022).

The torchvision ResNet with every conv a B-cos conv, no ReLU, average
instead of max pooling in the stem, and the 1×1 B-cos classifier applied at
every position before global average pooling (as in both official codes);
- v2: uncentered BatchNorm without bias after each conv, logit bias
  -log(C - 1);
- v1: no norm layers, MaxOut 2, the v1 per-layer scale, logits
  mean / 10 + log(0.01 / 0.99).
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.nn import BcosConv, LogitLayer, check_encoded, make_norm
from bcos_jax.nn.stochastic_depth import StochasticDepth


def _pool(x: jax.Array, kind: str) -> jax.Array:
  """The stem's 3×3 stride-2 pooling with padding 1 (torch semantics)."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  window, strides = (1, 3, 3, 1), (1, 2, 2, 1)
  if kind == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pads)
  if kind == "avg":  # count_include_pad=True, as torch's default
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pads) / 9.0
  if kind == "none":
    return x
  raise ValueError(f"unknown stem pooling {kind!r}; known: max, avg, none")


class _ConvNorm(nnx.Module):
  """A B-cos conv followed by the configured norm layer (or none)."""

  def __init__(self, c_in, c_out, kernel, *, strides=1, groups=1, layer, rngs):
    self.conv = BcosConv(c_in, c_out, kernel, strides=strides, padding=kernel // 2,
                         feature_group_count=groups, b=layer["b"], max_out=layer["max_out"],
                         scale=layer["scale"], rngs=rngs)
    self.norm = make_norm(layer["norm"], c_out) if layer["norm"] else None

  def __call__(self, x, *, explain=False):
    x = self.conv(x, explain=explain)
    return self.norm(x, explain=explain) if self.norm is not None else x


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, c_in, planes, *, strides, groups, base_width, drop_rate, layer, rngs):
    del groups, base_width
    self.conv1 = _ConvNorm(c_in, planes, 3, strides=strides, layer=layer, rngs=rngs)
    self.conv2 = _ConvNorm(planes, planes, 3, layer=layer, rngs=rngs)
    self.downsample = (_ConvNorm(c_in, planes, 1, strides=strides, layer=layer, rngs=rngs)
                       if strides != 1 or c_in != planes else None)
    self.drop_path = StochasticDepth(drop_rate, rngs=rngs)

  def __call__(self, x, *, explain=False):
    identity = x if self.downsample is None else self.downsample(x, explain=explain)
    return self.drop_path(self.conv2(self.conv1(x, explain=explain), explain=explain)) + identity


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, c_in, planes, *, strides, groups, base_width, drop_rate, layer, rngs):
    width = int(planes * (base_width / 64.0)) * groups
    out = planes * self.expansion
    self.conv1 = _ConvNorm(c_in, width, 1, layer=layer, rngs=rngs)
    self.conv2 = _ConvNorm(width, width, 3, strides=strides, groups=groups, layer=layer,
                           rngs=rngs)
    self.conv3 = _ConvNorm(width, out, 1, layer=layer, rngs=rngs)
    self.downsample = (_ConvNorm(c_in, out, 1, strides=strides, layer=layer, rngs=rngs)
                       if strides != 1 or c_in != out else None)
    self.drop_path = StochasticDepth(drop_rate, rngs=rngs)

  def __call__(self, x, *, explain=False):
    identity = x if self.downsample is None else self.downsample(x, explain=explain)
    y = self.conv3(self.conv2(self.conv1(x, explain=explain), explain=explain), explain=explain)
    return self.drop_path(y) + identity


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class BcosResNet(nnx.Module):
  """A B-cos ResNet/ResNeXt on NHWC images encoded with `add_inverse`.

  Args:
    block: "basic" or "bottleneck".
    layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    num_classes: logits.
    width: channels of the stem (64; v1 uses 64 with MaxOut 2).
    groups, width_per_group: ResNeXt's cardinality and width.
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel (v1: 2).
    scale: the v1 output scale (None: per-layer `k·sqrt(in)/100`), 1.0 for v2.
    norm: a `bcos_jax.nn.NORM_LAYERS` name, or "" for none (v1).
    stem_pool: "avg" (both official codes), "max" (torchvision) or "none".
    small_inputs: a 3×3 stride-1 stem without pooling, for 32×32 images (the
      v2 CIFAR-10 ResNets).
    stochastic_depth_prob: the last block's rate of dropping its residual branch
      while training (rates grow linearly from 0 over the blocks).
    classifier_before_pool: apply the 1×1 classifier at every position and
      average its outputs (official), or average the features first.
    logit_temperature, logit_bias: logits = pooled / temperature + bias;
      bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2),
               num_classes: int = 1000, width: int = 64, groups: int = 1,
               width_per_group: int = 64, b: float = 2.0, max_out: int = 1,
               scale: float | None = 1.0, norm: str = "NoBias(BatchNormUncentered2d)",
               stem_pool: str = "avg", small_inputs: bool = False,
               classifier_before_pool: bool = True,
               stochastic_depth_prob: float = 0.0,
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               rngs: nnx.Rngs):
    block_class = BLOCKS[block]
    layer = {"b": b, "max_out": max_out, "scale": scale, "norm": norm}
    self.stem_pool = "none" if small_inputs else stem_pool
    self.classifier_before_pool = classifier_before_pool
    kernel, stride = (3, 1) if small_inputs else (7, 2)
    self.conv1 = BcosConv(6, width, kernel, strides=stride, padding=kernel // 2, b=b,
                          max_out=max_out, scale=scale, rngs=rngs)
    self.bn1 = make_norm(norm, width) if norm else None
    c_in = width
    stages = []
    total, block_id = sum(layers), 0
    for index, count in enumerate(layers):
      planes = width * 2**index
      blocks = []
      for j in range(count):
        rate = stochastic_depth_prob * block_id / max(total - 1, 1)
        blocks.append(block_class(c_in, planes, strides=2 if (j == 0 and index > 0) else 1,
                                  groups=groups, base_width=width_per_group, drop_rate=rate,
                                  layer=layer, rngs=rngs))
        block_id += 1
        c_in = planes * block_class.expansion
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.fc = BcosConv(c_in, num_classes, 1, b=b, max_out=max_out, scale=scale, rngs=rngs)
    bias = -math.log(num_classes - 1) if logit_bias is None else logit_bias
    self.logit_layer = LogitLayer(logit_temperature, bias)

  def features(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    x = self.conv1(x, explain=explain)
    if self.bn1 is not None:
      x = self.bn1(x, explain=explain)
    x = _pool(x, self.stem_pool)
    for stage in self.stages:
      for block in stage:
        x = block(x, explain=explain)
    return x

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosResNet")
    x = self.features(x, explain=explain)
    if self.classifier_before_pool:
      x = self.fc(x, explain=explain).mean(axis=(1, 2))
    else:
      x = self.fc(x.mean(axis=(1, 2), keepdims=True), explain=explain)[:, 0, 0]
    return self.logit_layer(x)


_V2_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
              50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
              152: ("bottleneck", (3, 8, 36, 3))}


_CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9}


def _register() -> None:
  for depth, (block, layers) in _V2_DEPTHS.items():
    registry.register(f"resnet{depth}", BcosResNet, block=block, layers=layers)
  for depth in (50, 152):  # the bcos_final_long recipe: same architecture
    block, layers = _V2_DEPTHS[depth]
    registry.register(f"resnet{depth}_long", BcosResNet, block=block, layers=layers)
  registry.register("resnext50_32x4d", BcosResNet, block="bottleneck", layers=(3, 4, 6, 3),
                    groups=32, width_per_group=4)
  # The v2 CIFAR-10 ResNets (3 stages of 16, 32, 64 channels); the official
  # experiments train them without norm layers and with MaxOut 2 (configs/cifar10.py).
  for depth, blocks in _CIFAR_DEPTHS.items():
    registry.register(f"cifar10_resnet{depth}", BcosResNet, block="basic",
                      layers=(blocks,) * 3, width=16, small_inputs=True, num_classes=10)
  registry.register("v1_resnet34", BcosResNet, block="basic", layers=(3, 4, 6, 3), max_out=2,
                    scale=None, norm="", logit_temperature=10.0, logit_bias=math.log(0.01 / 0.99))


_register()
