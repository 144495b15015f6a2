"""B-cos DenseNets: v2 (hub names) and v1 (`v1_densenet121`, CVPR 2022).

torchvision's DenseNet-BC without ReLU: average pooling in the stem and the
transitions and a 1×1 B-cos classifier (the head) applied at every position
before global average pooling.
- v2: an uncentered BatchNorm (no bias) before each B-cos conv and at the end;
- v1: no norm layers, MaxOut 2, the v1 per-layer scale (÷100), logits
  mean / 1e-3 + log(0.01/0.99); growth rate and MaxOut are options (the
  paper's Tab. B1 ablation).
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.models.torch_keys import KeyMap, conv_keys, norm_keys
from bcos_jax.nn import ConvOptions, LogitLayer, apply_norm, avg_pool, check_encoded, optional_norm


class DenseLayer(nnx.Module):
  """norm1 → 1×1 conv to bn_size·growth → norm2 → 3×3 conv to growth."""

  def __init__(self, c_in, growth_rate, bn_size, *, conv: ConvOptions, norm: str, rngs):
    self.norm1 = optional_norm(norm, c_in)
    self.conv1 = conv.conv(c_in, bn_size * growth_rate, 1, rngs=rngs)
    self.norm2 = optional_norm(norm, bn_size * growth_rate)
    self.conv2 = conv.conv(bn_size * growth_rate, growth_rate, 3, padding=1, rngs=rngs)

  def __call__(self, x, *, explain=False):
    x = self.conv1(apply_norm(self.norm1, x, explain=explain), explain=explain)
    return self.conv2(apply_norm(self.norm2, x, explain=explain), explain=explain)


class Transition(nnx.Module):
  """norm → 1×1 conv halving the channels → 2×2 average pooling."""

  def __init__(self, c_in, c_out, *, conv: ConvOptions, norm: str, rngs):
    self.norm = optional_norm(norm, c_in)
    self.conv = conv.conv(c_in, c_out, 1, rngs=rngs)

  def __call__(self, x, *, explain=False):
    return avg_pool(self.conv(apply_norm(self.norm, x, explain=explain), explain=explain), 2, 2)


class BcosDenseNet(nnx.Module):
  """A B-cos DenseNet-BC on NHWC images encoded with `add_inverse`.

  Args:
    growth_rate: channels each dense layer adds (k).
    block_config: dense layers per block.
    stem_width: channels of the stem (torchvision's num_init_features).
    bn_size: bottleneck width factor.
    num_classes: logits.
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel (v1: 2).
    scale: a fixed output divisor of every conv (v2: 1).
    v1_scale_divisor: when set, every conv divides by `sqrt(k·k)·sqrt(in)/v1_scale_divisor`
      instead (v1: 100).
    norm: a `bcos_jax.nn.NORM_LAYERS` name, or "" for none (v1).
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
               stem_width: int = 64, bn_size: int = 4, num_classes: int = 1000,
               b: float = 2.0, max_out: int = 1, scale: float = 1.0,
               v1_scale_divisor: float | None = None,
               norm: str = "NoBias(BatchNormUncentered2d)", logit_temperature: float = 1.0,
               logit_bias: float | None = None, rngs: nnx.Rngs):
    conv = ConvOptions(b=b, max_out=max_out, scale=scale, v1_scale_divisor=v1_scale_divisor)
    self.conv0 = conv.conv(6, stem_width, 7, strides=2, padding=3, rngs=rngs)
    self.norm0 = optional_norm(norm, stem_width)
    features = stem_width
    blocks, transitions = [], []
    for i, count in enumerate(block_config):
      layers = [DenseLayer(features + j * growth_rate, growth_rate, bn_size, conv=conv,
                           norm=norm, rngs=rngs) for j in range(count)]
      blocks.append(nnx.List(layers))
      features += count * growth_rate
      if i != len(block_config) - 1:
        transitions.append(Transition(features, features // 2, conv=conv, norm=norm, rngs=rngs))
        features //= 2
    self.blocks = nnx.List(blocks)
    self.transitions = nnx.List(transitions)
    self.norm5 = optional_norm(norm, features)
    self.head = conv.conv(features, num_classes, 1, rngs=rngs)
    self.logit_layer = LogitLayer(logit_temperature, logit_bias, num_classes)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosDenseNet")
    x = avg_pool(apply_norm(self.norm0, self.conv0(x, explain=explain), explain=explain), 3, 2, 1)
    for i, block in enumerate(self.blocks):
      for layer in block:
        x = jnp.concatenate([x, layer(x, explain=explain)], axis=-1)
      if i < len(self.transitions):
        x = self.transitions[i](x, explain=explain)
    x = apply_norm(self.norm5, x, explain=explain)
    return self.logit_layer(self.head(x, explain=explain).mean(axis=(1, 2)))


def torch_keys(model: BcosDenseNet, p: str) -> KeyMap:
  """torchvision's names: features.conv0/norm0, denseblock{b}.denselayer{j}, transition{t},
  norm5, classifier."""
  keys = conv_keys(f"{p}features.conv0", ("conv0",))
  keys |= norm_keys(f"{p}features.norm0", ("norm0",), model.norm0)
  for b, block in enumerate(model.blocks):
    for j, layer in enumerate(block):
      prefix, path = f"{p}features.denseblock{b + 1}.denselayer{j + 1}", ("blocks", b, j)
      for n in (1, 2):
        keys |= norm_keys(f"{prefix}.norm{n}", (*path, f"norm{n}"), getattr(layer, f"norm{n}"))
        keys |= conv_keys(f"{prefix}.conv{n}", (*path, f"conv{n}"))
  for t, transition in enumerate(model.transitions):
    prefix = f"{p}features.transition{t + 1}"
    keys |= norm_keys(f"{prefix}.norm", ("transitions", t, "norm"), transition.norm)
    keys |= conv_keys(f"{prefix}.conv", ("transitions", t, "conv"))
  keys |= norm_keys(f"{p}features.norm5", ("norm5",), model.norm5)
  return keys | conv_keys(f"{p}classifier", ("head",))


FAMILY = registry.Family("densenet", BcosDenseNet, torch_keys,
                         grad_cam_layer=lambda model: ("head", "input"))

registry.register("densenet121", FAMILY, growth_rate=32, block_config=(6, 12, 24, 16),
                  stem_width=64)
registry.register("densenet161", FAMILY, growth_rate=48, block_config=(6, 12, 36, 24),
                  stem_width=96)
registry.register("densenet169", FAMILY, growth_rate=32, block_config=(6, 12, 32, 32),
                  stem_width=64)
registry.register("densenet201", FAMILY, growth_rate=32, block_config=(6, 12, 48, 32),
                  stem_width=64)
# The bcos_final_long recipe's DenseNet-121: the same architecture.
registry.register("densenet121_long", FAMILY, growth_rate=32, block_config=(6, 12, 24, 16),
                  stem_width=64)
registry.register("v1_densenet121", FAMILY, torch_prefix="0.", growth_rate=32,
                  block_config=(6, 12, 24, 16), stem_width=64, max_out=2, v1_scale_divisor=100.0,
                  norm="", logit_temperature=1e-3, logit_bias=math.log(0.01 / 0.99))
