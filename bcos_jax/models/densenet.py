"""B-cos DenseNets: v2 (hub names) and v1 (`v1_densenet121`, CVPR 2022).

torchvision's DenseNet-BC without ReLU: average pooling in the stem and the
transitions and a 1×1 B-cos classifier applied at every position before
global average pooling.
- v2: an uncentered BatchNorm (no bias) before each B-cos conv and at the end;
- v1: no norm layers, MaxOut 2, the v1 per-layer scale, logits
  mean / 1e-3 + log(0.01/0.99); growth rate and MaxOut are options (the
  paper's Tab. B1 ablation).
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.models.resnet import _pool
from bcos_jax.nn import BcosConv, LogitLayer, check_encoded, make_norm


def _maybe_norm(norm: str, features: int):
  return make_norm(norm, features) if norm else None


def _apply(norm, x, explain):
  return x if norm is None else norm(x, explain=explain)


class DenseLayer(nnx.Module):
  """norm1 → 1×1 conv to bn_size·growth → norm2 → 3×3 conv to growth."""

  def __init__(self, c_in, growth_rate, bn_size, *, norm, rngs, **conv):
    self.norm1 = _maybe_norm(norm, c_in)
    self.conv1 = BcosConv(c_in, bn_size * growth_rate, 1, rngs=rngs, **conv)
    self.norm2 = _maybe_norm(norm, bn_size * growth_rate)
    self.conv2 = BcosConv(bn_size * growth_rate, growth_rate, 3, padding=1, rngs=rngs, **conv)

  def __call__(self, x, *, explain=False):
    x = self.conv1(_apply(self.norm1, x, explain), explain=explain)
    return self.conv2(_apply(self.norm2, x, explain), explain=explain)


class Transition(nnx.Module):
  """norm → 1×1 conv halving the channels → 2×2 average pooling."""

  def __init__(self, c_in, c_out, *, norm, rngs, **conv):
    self.norm = _maybe_norm(norm, c_in)
    self.conv = BcosConv(c_in, c_out, 1, rngs=rngs, **conv)

  def __call__(self, x, *, explain=False):
    x = self.conv(_apply(self.norm, x, explain), explain=explain)
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return summed / 4.0


class BcosDenseNet(nnx.Module):
  """A B-cos DenseNet-BC on NHWC images encoded with `add_inverse`.

  Args:
    growth_rate: channels each dense layer adds (k).
    block_config: dense layers per block.
    num_init_features: channels of the stem.
    bn_size: bottleneck width factor.
    num_classes: logits.
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel (v1: 2).
    scale: the v1 output scale (None: per-layer `k·sqrt(in)/100`); 1.0 for v2.
    norm: a `bcos_jax.nn.NORM_LAYERS` name, or "" for none (v1).
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
               num_init_features: int = 64, bn_size: int = 4, num_classes: int = 1000,
               b: float = 2.0, max_out: int = 1, scale: float | None = 1.0,
               norm: str = "NoBias(BatchNormUncentered2d)", logit_temperature: float = 1.0,
               logit_bias: float | None = None, rngs: nnx.Rngs):
    conv = dict(b=b, max_out=max_out, scale=scale)
    self.conv0 = BcosConv(6, num_init_features, 7, strides=2, padding=3, rngs=rngs, **conv)
    self.norm0 = _maybe_norm(norm, num_init_features)
    features = num_init_features
    blocks, transitions = [], []
    for i, count in enumerate(block_config):
      layers = []
      for j in range(count):
        layers.append(DenseLayer(features + j * growth_rate, growth_rate, bn_size, norm=norm,
                                 rngs=rngs, **conv))
      blocks.append(nnx.List(layers))
      features += count * growth_rate
      if i != len(block_config) - 1:
        transitions.append(Transition(features, features // 2, norm=norm, rngs=rngs, **conv))
        features //= 2
    self.blocks = nnx.List(blocks)
    self.transitions = nnx.List(transitions)
    self.norm5 = _maybe_norm(norm, features)
    self.classifier = BcosConv(features, num_classes, 1, rngs=rngs, **conv)
    bias = -math.log(num_classes - 1) if logit_bias is None else logit_bias
    self.logit_layer = LogitLayer(logit_temperature, bias)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosDenseNet")
    x = _pool(_apply(self.norm0, self.conv0(x, explain=explain), explain), "avg")
    for i, block in enumerate(self.blocks):
      for layer in block:
        x = jnp.concatenate([x, layer(x, explain=explain)], axis=-1)
      if i < len(self.transitions):
        x = self.transitions[i](x, explain=explain)
    x = _apply(self.norm5, x, explain)
    return self.logit_layer(self.classifier(x, explain=explain).mean(axis=(1, 2)))


_CONFIGS = {121: (32, (6, 12, 24, 16), 64), 161: (48, (6, 12, 36, 24), 96),
            169: (32, (6, 12, 32, 32), 64), 201: (32, (6, 12, 48, 32), 64)}


def _register() -> None:
  for depth, (growth, blocks, init) in _CONFIGS.items():
    registry.register(f"densenet{depth}", BcosDenseNet, growth_rate=growth, block_config=blocks,
                      num_init_features=init)
  growth, blocks, init = _CONFIGS[121]
  registry.register("densenet121_long", BcosDenseNet, growth_rate=growth, block_config=blocks,
                    num_init_features=init)
  registry.register("v1_densenet121", BcosDenseNet, growth_rate=growth, block_config=blocks,
                    num_init_features=init, max_out=2, scale=None, norm="",
                    logit_temperature=1e-3, logit_bias=math.log(0.01 / 0.99))


_register()
