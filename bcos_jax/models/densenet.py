"""B-cos DenseNets (v2 hub names): torchvision's DenseNet-BC without ReLU.

Uncentered BatchNorm (no bias) before each B-cos conv, average pooling in
the stem and the transitions, a final norm, and a 1×1 B-cos classifier
applied at every position before global average pooling.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.models.resnet import _pool
from bcos_jax.nn import BcosConv, LogitLayer, check_encoded, make_norm


class DenseLayer(nnx.Module):
  """norm1 → 1×1 conv to bn_size·growth → norm2 → 3×3 conv to growth."""

  def __init__(self, c_in, growth_rate, bn_size, *, b, norm, rngs):
    self.norm1 = make_norm(norm, c_in)
    self.conv1 = BcosConv(c_in, bn_size * growth_rate, 1, b=b, rngs=rngs)
    self.norm2 = make_norm(norm, bn_size * growth_rate)
    self.conv2 = BcosConv(bn_size * growth_rate, growth_rate, 3, padding=1, b=b, rngs=rngs)

  def __call__(self, x, *, explain=False):
    x = self.conv1(self.norm1(x, explain=explain), explain=explain)
    return self.conv2(self.norm2(x, explain=explain), explain=explain)


class Transition(nnx.Module):
  """norm → 1×1 conv halving the channels → 2×2 average pooling."""

  def __init__(self, c_in, c_out, *, b, norm, rngs):
    self.norm = make_norm(norm, c_in)
    self.conv = BcosConv(c_in, c_out, 1, b=b, rngs=rngs)

  def __call__(self, x, *, explain=False):
    x = self.conv(self.norm(x, explain=explain), explain=explain)
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
    norm: a `bcos_jax.nn.NORM_LAYERS` name.
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
               num_init_features: int = 64, bn_size: int = 4, num_classes: int = 1000,
               b: float = 2.0, norm: str = "NoBias(BatchNormUncentered2d)",
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               rngs: nnx.Rngs):
    self.conv0 = BcosConv(6, num_init_features, 7, strides=2, padding=3, b=b, rngs=rngs)
    self.norm0 = make_norm(norm, num_init_features)
    features = num_init_features
    blocks, transitions = [], []
    for i, count in enumerate(block_config):
      layers = []
      for j in range(count):
        layers.append(DenseLayer(features + j * growth_rate, growth_rate, bn_size, b=b,
                                 norm=norm, rngs=rngs))
      blocks.append(nnx.List(layers))
      features += count * growth_rate
      if i != len(block_config) - 1:
        transitions.append(Transition(features, features // 2, b=b, norm=norm, rngs=rngs))
        features //= 2
    self.blocks = nnx.List(blocks)
    self.transitions = nnx.List(transitions)
    self.norm5 = make_norm(norm, features)
    self.classifier = BcosConv(features, num_classes, 1, b=b, rngs=rngs)
    bias = -math.log(num_classes - 1) if logit_bias is None else logit_bias
    self.logit_layer = LogitLayer(logit_temperature, bias)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosDenseNet")
    x = _pool(self.norm0(self.conv0(x, explain=explain), explain=explain), "avg")
    for i, block in enumerate(self.blocks):
      for layer in block:
        x = jnp.concatenate([x, layer(x, explain=explain)], axis=-1)
      if i < len(self.transitions):
        x = self.transitions[i](x, explain=explain)
    x = self.norm5(x, explain=explain)
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


_register()
