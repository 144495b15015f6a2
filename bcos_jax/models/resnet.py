"""B-cos ResNets and ResNeXts: v2 (TPAMI 2024, torch.hub names) and v1 (CVPR 2022).

The torchvision ResNet with every conv a B-cos conv, no ReLU, average
instead of max pooling in the stem, and the 1×1 B-cos classifier (the head)
applied at every position before global average pooling (as in both
official codes);
- v2: uncentered BatchNorm without bias after each conv, logit bias
  -log(C - 1);
- v1: no norm layers, MaxOut 2, the v1 per-layer scale (÷100), logits
  mean / 10 + log(0.01 / 0.99).
"""

import math
from collections.abc import Sequence

import jax
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.conventional import (
  BCOSIFIED_OPTIONS,
  BCOSIFIED_TORCH_PREFIX,
  STANDARD_OPTIONS,
)
from bcos_jax.models.torch_keys import KeyMap, conv_keys, conv_norm_keys, linear_keys, norm_keys
from bcos_jax.nn import (
  ENCODED_CHANNELS,
  ConvNorm,
  ConvOptions,
  InputNormalisation,
  LogitLayer,
  StandardDense,
  StochasticDepth,
  apply_norm,
  avg_pool,
  check_encoded,
  check_rgb,
  max_pool,
  optional_norm,
)
from bcos_jax.nn import activation as get_activation
from bcos_jax.nn.remat import RECOMPUTED_CALL, Rematerialisable, call_block


def _stem_pool(x: jax.Array, kind: str) -> jax.Array:
  """The stem's 3×3 stride-2 pooling with padding 1 (torch semantics)."""
  if kind == "max":
    return max_pool(x, 3, 2, 1)
  if kind == "avg":
    return avg_pool(x, 3, 2, 1)
  if kind == "none":
    return x
  raise UserError(f"unknown stem pooling {kind!r}; known: max, avg, none")


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, c_in, planes, *, strides, groups, base_width, drop_rate, conv, norm, act,
               rngs):
    del groups, base_width
    self.act = act
    self.conv1 = ConvNorm(c_in, planes, 3, strides=strides, conv=conv, norm=norm, rngs=rngs)
    self.conv2 = ConvNorm(planes, planes, 3, conv=conv, norm=norm, rngs=rngs)
    self.downsample = (ConvNorm(c_in, planes, 1, strides=strides, conv=conv, norm=norm,
                                rngs=rngs)
                       if strides != 1 or c_in != planes else None)
    self.drop_path = StochasticDepth(drop_rate, rngs=rngs)

  def __call__(self, x, *, explain=False):
    identity = x if self.downsample is None else self.downsample(x, explain=explain)
    y = self.conv2(self.act(self.conv1(x, explain=explain)), explain=explain)
    return self.act(self.drop_path(y) + identity)


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, c_in, planes, *, strides, groups, base_width, drop_rate, conv, norm, act,
               rngs):
    self.act = act
    width = int(planes * (base_width / 64.0)) * groups
    out = planes * self.expansion
    self.conv1 = ConvNorm(c_in, width, 1, conv=conv, norm=norm, rngs=rngs)
    self.conv2 = ConvNorm(width, width, 3, strides=strides, groups=groups, conv=conv, norm=norm,
                          rngs=rngs)
    self.conv3 = ConvNorm(width, out, 1, conv=conv, norm=norm, rngs=rngs)
    self.downsample = (ConvNorm(c_in, out, 1, strides=strides, conv=conv, norm=norm, rngs=rngs)
                       if strides != 1 or c_in != out else None)
    self.drop_path = StochasticDepth(drop_rate, rngs=rngs)

  def __call__(self, x, *, explain=False):
    identity = x if self.downsample is None else self.downsample(x, explain=explain)
    y = self.act(self.conv1(x, explain=explain))
    y = self.conv3(self.act(self.conv2(y, explain=explain)), explain=explain)
    return self.act(self.drop_path(y) + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class BcosResNet(nnx.Module, Rematerialisable):
  """A B-cos ResNet/ResNeXt on NHWC images encoded with `add_inverse` (or, with
  `bcos=False`, torchvision's conventional ResNet on normalised RGB).

  Args:
    block: "basic" or "bottleneck".
    layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    num_classes: logits.
    stem_width: channels of the stem; stage i has stem_width·2^i planes.
    groups, width_per_group: ResNeXt's cardinality and width.
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel (v1: 2).
    scale: a fixed output divisor of every conv (v2: 1).
    v1_scale_divisor: when set, every conv divides by `sqrt(k·k)·sqrt(in)/v1_scale_divisor`
      instead (v1: 100).
    norm: a `bcos_jax.nn.NORM_LAYERS` name, or "" for none (v1).
    stem_pool: "avg" (both official codes), "max" (torchvision) or "none".
    small_inputs: a 3×3 stride-1 stem without pooling, for 32×32 images (the
      v2 CIFAR-10 ResNets).
    stochastic_depth_prob: the last block's rate of dropping its residual branch
      while training (rates grow linearly from 0 over the blocks).
    classifier_before_pool: apply the head at every position and average its
      outputs (official), or average the features first (torchvision).
    bcos: False builds ordinary convs and a linear head with bias (the
      conventional network B-cosification starts from).
    activation: "none" (B-cos) or "relu" where torchvision has one (the
      conventional and the B-cosified networks).
    unit_norm_kernels: False keeps raw conv kernels (B-cosified networks).
    learn_b: every conv learns its B (a B-cosification ablation).
    head_bias: the head adds a bias (conventional; a B-cosification ablation).
    input_mean, input_std: when set, the model normalises its input with them
      first (B-cosified networks: the ImageNet statistics of the 6 channels).
    logit_temperature, logit_bias: logits = pooled / temperature + bias;
      bias None means -log(num_classes - 1).
    remat: recompute every residual block in the backward pass while training
      (`bcos_jax.nn.remat`).
    rngs: initialisation randomness.
  """

  def __init__(self, *, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2),
               num_classes: int = 1000, stem_width: int = 64, groups: int = 1,
               width_per_group: int = 64, b: float = 2.0, max_out: int = 1,
               scale: float = 1.0, v1_scale_divisor: float | None = None,
               norm: str = "NoBias(BatchNormUncentered2d)",
               stem_pool: str = "avg", small_inputs: bool = False,
               classifier_before_pool: bool = True,
               stochastic_depth_prob: float = 0.0, bcos: bool = True,
               activation: str = "none", unit_norm_kernels: bool = True,
               learn_b: bool = False, head_bias: bool = False,
               input_mean: Sequence[float] | None = None,
               input_std: Sequence[float] | None = None,
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               remat: bool = False, rngs: nnx.Rngs):
    block_class = BLOCKS[block]
    conv = ConvOptions(b=b, max_out=max_out, scale=scale, v1_scale_divisor=v1_scale_divisor,
                       bcos=bcos, unit_norm_kernels=unit_norm_kernels, learn_b=learn_b)
    act = get_activation(activation)
    self.bcos = bcos
    self.act = act
    self.remat, self.deterministic = remat, False
    self.input_norm = InputNormalisation.of(input_mean, input_std)
    self.stem_pool = "none" if small_inputs else stem_pool
    self.classifier_before_pool = classifier_before_pool
    kernel, stride = (3, 1) if small_inputs else (7, 2)
    channels = ENCODED_CHANNELS if bcos else 3
    self.conv1 = conv.conv(channels, stem_width, kernel, strides=stride, padding=kernel // 2,
                           rngs=rngs)
    self.bn1 = optional_norm(norm, stem_width)
    c_in = stem_width
    stages = []
    total, block_id = sum(layers), 0
    for index, count in enumerate(layers):
      planes = stem_width * 2**index
      blocks = []
      for j in range(count):
        rate = stochastic_depth_prob * block_id / max(total - 1, 1)
        blocks.append(block_class(c_in, planes, strides=2 if (j == 0 and index > 0) else 1,
                                  groups=groups, base_width=width_per_group, drop_rate=rate,
                                  conv=conv, norm=norm, act=act, rngs=rngs))
        block_id += 1
        c_in = planes * block_class.expansion
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.head = (conv.conv(c_in, num_classes, 1, use_bias=head_bias, rngs=rngs) if bcos
                 else StandardDense(c_in, num_classes, use_bias=head_bias, rngs=rngs))
    self.logit_layer = LogitLayer(logit_temperature, logit_bias, num_classes)

  def features(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    x = self.act(apply_norm(self.bn1, self.conv1(x, explain=explain), explain=explain))
    x = _stem_pool(x, self.stem_pool)
    block_on = RECOMPUTED_CALL if self.recomputes() else call_block
    for stage in self.stages:
      for block in stage:
        x = block_on(block, x, explain)
    return x

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    (check_encoded if self.bcos else check_rgb)(x, type(self).__name__)
    x = self.features(self.input_norm(x), explain=explain)
    if self.classifier_before_pool:
      x = self.head(x, explain=explain).mean(axis=(1, 2))
    elif self.bcos:
      x = self.head(x.mean(axis=(1, 2), keepdims=True), explain=explain)[:, 0, 0]
    else:
      x = self.head(x.mean(axis=(1, 2)))
    return self.logit_layer(x)


def torch_keys(model: BcosResNet, p: str) -> KeyMap:
  """torchvision's names: conv1/bn1, layer{s}.{j}.conv{n}/bn{n}, downsample.0/1, fc."""
  keys = conv_keys(f"{p}conv1", ("conv1",), model.conv1) | norm_keys(f"{p}bn1", ("bn1",),
                                                                      model.bn1)
  for s, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      prefix, path = f"{p}layer{s + 1}.{j}", ("stages", s, j)
      for n, name in enumerate(("conv1", "conv2", "conv3")):
        if hasattr(block, name):
          keys |= conv_norm_keys(f"{prefix}.{name}", f"{prefix}.bn{n + 1}", (*path, name),
                                 getattr(block, name))
      if block.downsample is not None:
        keys |= conv_norm_keys(f"{prefix}.downsample.0", f"{prefix}.downsample.1",
                               (*path, "downsample"), block.downsample)
  if isinstance(model.head, StandardDense):
    return keys | linear_keys(f"{p}fc", ("head",), model.head)
  return keys | conv_keys(f"{p}fc", ("head",), model.head)


def _last_block(model: BcosResNet) -> tuple[str, str]:
  return f"stages.{len(model.stages) - 1}.{len(model.stages[-1]) - 1}", "output"


FAMILY = registry.Family("resnet", BcosResNet, torch_keys, grad_cam_layer=_last_block)
# torchvision's ResNets, with torchvision's keys.
STANDARD_FAMILY = registry.Family(
    "standard_resnet", BcosResNet, torch_keys, grad_cam_layer=_last_block,
    input_encoding="imagenet_normalized_rgb", bcos=False, defaults=STANDARD_OPTIONS)
# B-cosified torchvision ResNets, with the keys of the official `BcosifyNetwork`.
BCOSIFIED_FAMILY = registry.Family(
    "bcosified_resnet", BcosResNet, torch_keys, grad_cam_layer=_last_block, converted=True,
    defaults=BCOSIFIED_OPTIONS)

# The v2 torch.hub models.
_BASIC, _BOTTLENECK = dict(block="basic"), dict(block="bottleneck")
registry.register("resnet18", FAMILY, layers=(2, 2, 2, 2), **_BASIC)
registry.register("resnet34", FAMILY, layers=(3, 4, 6, 3), **_BASIC)
registry.register("resnet50", FAMILY, layers=(3, 4, 6, 3), **_BOTTLENECK)
registry.register("resnet101", FAMILY, layers=(3, 4, 23, 3), **_BOTTLENECK)
registry.register("resnet152", FAMILY, layers=(3, 8, 36, 3), **_BOTTLENECK)
# The bcos_final_long recipe's models: the same architectures.
registry.register("resnet50_long", FAMILY, layers=(3, 4, 6, 3), **_BOTTLENECK)
registry.register("resnet152_long", FAMILY, layers=(3, 8, 36, 3), **_BOTTLENECK)
registry.register("resnext50_32x4d", FAMILY, layers=(3, 4, 6, 3), groups=32, width_per_group=4,
                  **_BOTTLENECK)
# The v2 CIFAR-10 ResNets (3 stages of 16, 32, 64 channels); the official
# experiments train them without norm layers and with MaxOut 2 (configs/cifar10.py).
_CIFAR = dict(block="basic", stem_width=16, small_inputs=True, num_classes=10)
registry.register("cifar10_resnet20", FAMILY, layers=(3, 3, 3), **_CIFAR)
registry.register("cifar10_resnet32", FAMILY, layers=(5, 5, 5), **_CIFAR)
registry.register("cifar10_resnet44", FAMILY, layers=(7, 7, 7), **_CIFAR)
registry.register("cifar10_resnet56", FAMILY, layers=(9, 9, 9), **_CIFAR)
# The v1 ResNet-34, saved as the first module of a Sequential.
registry.register("v1_resnet34", FAMILY, torch_prefix="0.", layers=(3, 4, 6, 3), block="basic",
                  max_out=2, v1_scale_divisor=100.0, norm="", logit_temperature=10.0,
                  logit_bias=math.log(0.01 / 0.99))
# torchvision's ResNets, and the same B-cosified (`bcos_jax.convert.bcosify`).
_18, _34 = dict(layers=(2, 2, 2, 2), **_BASIC), dict(layers=(3, 4, 6, 3), **_BASIC)
_50, _101 = dict(layers=(3, 4, 6, 3), **_BOTTLENECK), dict(layers=(3, 4, 23, 3), **_BOTTLENECK)
_152 = dict(layers=(3, 8, 36, 3), **_BOTTLENECK)
registry.register("standard_resnet18", STANDARD_FAMILY, **_18)
registry.register("standard_resnet34", STANDARD_FAMILY, **_34)
registry.register("standard_resnet50", STANDARD_FAMILY, **_50)
registry.register("standard_resnet101", STANDARD_FAMILY, **_101)
registry.register("standard_resnet152", STANDARD_FAMILY, **_152)
_M = BCOSIFIED_TORCH_PREFIX
registry.register("bcosified_resnet18", BCOSIFIED_FAMILY, torch_prefix=_M, **_18)
registry.register("bcosified_resnet34", BCOSIFIED_FAMILY, torch_prefix=_M, **_34)
registry.register("bcosified_resnet50", BCOSIFIED_FAMILY, torch_prefix=_M, **_50)
registry.register("bcosified_resnet101", BCOSIFIED_FAMILY, torch_prefix=_M, **_101)
registry.register("bcosified_resnet152", BCOSIFIED_FAMILY, torch_prefix=_M, **_152)
