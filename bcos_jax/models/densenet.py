"""B-cos DenseNets: v2 (hub names) and v1 (`v1_densenet121`, CVPR 2022).

torchvision's DenseNet-BC without ReLU: average pooling in the stem and the
transitions and a 1×1 B-cos classifier (the head) applied at every position
before global average pooling.
- v2: an uncentered BatchNorm (no bias) before each B-cos conv and at the end;
- v1: no norm layers, MaxOut 2, the v1 per-layer scale (÷100), logits
  mean / 1e-3 + log(0.01/0.99); growth rate and MaxOut are options (the
  paper's Tab. B1 ablation).
With `remat=True` every dense layer, its concatenation of the block's
features included, is recomputed in the backward pass (as in Pleiss et al.,
"Memory-efficient implementation of DenseNets", 2017): only the k new
channels of each layer are stored, not its normalised concatenated input.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.conventional import (
  BCOSIFIED_OPTIONS,
  BCOSIFIED_TORCH_PREFIX,
  STANDARD_OPTIONS,
)
from bcos_jax.models.torch_keys import KeyMap, conv_keys, linear_keys, norm_keys
from bcos_jax.nn import (
  ENCODED_CHANNELS,
  ConvOptions,
  InputNormalisation,
  LogitLayer,
  StandardDense,
  apply_norm,
  avg_pool,
  check_encoded,
  check_rgb,
  max_pool,
  optional_norm,
)
from bcos_jax.nn import activation as get_activation
from bcos_jax.nn.remat import Rematerialisable, recomputed


class DenseLayer(nnx.Module):
  """norm1 → 1×1 conv to bn_size·growth → norm2 → 3×3 conv to growth."""

  def __init__(self, c_in, growth_rate, bn_size, *, conv: ConvOptions, norm: str, act, rngs):
    self.act = act
    self.norm1 = optional_norm(norm, c_in)
    self.conv1 = conv.conv(c_in, bn_size * growth_rate, 1, rngs=rngs)
    self.norm2 = optional_norm(norm, bn_size * growth_rate)
    self.conv2 = conv.conv(bn_size * growth_rate, growth_rate, 3, padding=1, rngs=rngs)

  def __call__(self, x, *, explain=False):
    x = self.conv1(self.act(apply_norm(self.norm1, x, explain=explain)), explain=explain)
    return self.conv2(self.act(apply_norm(self.norm2, x, explain=explain)), explain=explain)


def _dense_layer_on(layer: DenseLayer, features: list[jax.Array], explain: bool) -> jax.Array:
  """The layer on the concatenation of the block's features so far (channels last)."""
  return layer(jnp.concatenate(features, axis=-1), explain=explain)


# The same, rematerialised: the concatenation happens inside, so the backward pass keeps
# each layer's k new channels only (linear, not quadratic, in the block's depth).
_remat_dense_layer_on = recomputed(_dense_layer_on)


class Transition(nnx.Module):
  """norm → 1×1 conv halving the channels → 2×2 average pooling."""

  def __init__(self, c_in, c_out, *, conv: ConvOptions, norm: str, act, rngs):
    self.act = act
    self.norm = optional_norm(norm, c_in)
    self.conv = conv.conv(c_in, c_out, 1, rngs=rngs)

  def __call__(self, x, *, explain=False):
    x = self.act(apply_norm(self.norm, x, explain=explain))
    return avg_pool(self.conv(x, explain=explain), 2, 2)


class BcosDenseNet(nnx.Module, Rematerialisable):
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
    stem_pool: "avg" (both official codes) or "max" (torchvision).
    classifier_before_pool: apply the head at every position and average its
      outputs (official), or average the features first (torchvision).
    bcos: False builds ordinary convs and a linear head with bias (the
      conventional network B-cosification starts from).
    activation: "none" (B-cos) or "relu" after every norm, as torchvision.
    unit_norm_kernels: False keeps raw conv kernels (B-cosified networks).
    learn_b: every conv learns its B (a B-cosification ablation).
    head_bias: the head adds a bias (conventional; a B-cosification ablation).
    input_mean, input_std: when set, the model normalises its input with them
      first (B-cosified networks).
    final_relu: a ReLU after the last norm, as torchvision's forward applies (a
      plain function there: the B-cosification ablation without ReLUs keeps it).
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    remat: recompute every dense layer in the backward pass while training
      (`bcos_jax.nn.remat`).
    rngs: initialisation randomness.
  """

  def __init__(self, *, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
               stem_width: int = 64, bn_size: int = 4, num_classes: int = 1000,
               b: float = 2.0, max_out: int = 1, scale: float = 1.0,
               v1_scale_divisor: float | None = None,
               norm: str = "NoBias(BatchNormUncentered2d)", stem_pool: str = "avg",
               classifier_before_pool: bool = True, bcos: bool = True,
               activation: str = "none", unit_norm_kernels: bool = True,
               learn_b: bool = False, head_bias: bool = False,
               input_mean: Sequence[float] | None = None,
               input_std: Sequence[float] | None = None, final_relu: bool = False,
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               remat: bool = False, rngs: nnx.Rngs):
    conv = ConvOptions(b=b, max_out=max_out, scale=scale, v1_scale_divisor=v1_scale_divisor,
                       bcos=bcos, unit_norm_kernels=unit_norm_kernels, learn_b=learn_b)
    act = get_activation(activation)
    self.remat, self.deterministic = remat, False
    if stem_pool not in ("avg", "max"):
      raise UserError(f"unknown stem pooling {stem_pool!r}; known: avg, max")
    self.bcos, self.act, self.stem_pool = bcos, act, stem_pool
    self.classifier_before_pool = classifier_before_pool
    self.final_relu = final_relu
    self.input_norm = InputNormalisation.of(input_mean, input_std)
    self.conv0 = conv.conv(ENCODED_CHANNELS if bcos else 3, stem_width, 7, strides=2, padding=3,
                           rngs=rngs)
    self.norm0 = optional_norm(norm, stem_width)
    features = stem_width
    blocks, transitions = [], []
    for i, count in enumerate(block_config):
      layers = [DenseLayer(features + j * growth_rate, growth_rate, bn_size, conv=conv,
                           norm=norm, act=act, rngs=rngs) for j in range(count)]
      blocks.append(nnx.List(layers))
      features += count * growth_rate
      if i != len(block_config) - 1:
        transitions.append(Transition(features, features // 2, conv=conv, norm=norm, act=act,
                                      rngs=rngs))
        features //= 2
    self.blocks = nnx.List(blocks)
    self.transitions = nnx.List(transitions)
    self.norm5 = optional_norm(norm, features)
    self.head = (conv.conv(features, num_classes, 1, use_bias=head_bias, rngs=rngs) if bcos
                 else StandardDense(features, num_classes, use_bias=head_bias, rngs=rngs))
    self.logit_layer = LogitLayer(logit_temperature, logit_bias, num_classes)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    (check_encoded if self.bcos else check_rgb)(x, type(self).__name__)
    x = self.act(apply_norm(self.norm0, self.conv0(self.input_norm(x), explain=explain),
                            explain=explain))
    x = (avg_pool if self.stem_pool == "avg" else max_pool)(x, 3, 2, 1)
    layer_on = _remat_dense_layer_on if self.recomputes() else _dense_layer_on
    for i, block in enumerate(self.blocks):
      features = [x]
      for layer in block:
        features.append(layer_on(layer, features, explain))
      x = jnp.concatenate(features, axis=-1)
      if i < len(self.transitions):
        x = self.transitions[i](x, explain=explain)
    x = apply_norm(self.norm5, x, explain=explain)
    x = jax.nn.relu(x) if self.final_relu else x
    if self.classifier_before_pool:
      return self.logit_layer(self.head(x, explain=explain).mean(axis=(1, 2)))
    return self.logit_layer(self.head(x.mean(axis=(1, 2)), explain=explain))


def torch_keys(model: BcosDenseNet, p: str) -> KeyMap:
  """torchvision's names: features.conv0/norm0, denseblock{b}.denselayer{j}, transition{t},
  norm5, classifier."""
  keys = conv_keys(f"{p}features.conv0", ("conv0",), model.conv0)
  keys |= norm_keys(f"{p}features.norm0", ("norm0",), model.norm0)
  for b, block in enumerate(model.blocks):
    for j, layer in enumerate(block):
      prefix, path = f"{p}features.denseblock{b + 1}.denselayer{j + 1}", ("blocks", b, j)
      for n in (1, 2):
        keys |= norm_keys(f"{prefix}.norm{n}", (*path, f"norm{n}"), getattr(layer, f"norm{n}"))
        keys |= conv_keys(f"{prefix}.conv{n}", (*path, f"conv{n}"), getattr(layer, f"conv{n}"))
  for t, transition in enumerate(model.transitions):
    prefix = f"{p}features.transition{t + 1}"
    keys |= norm_keys(f"{prefix}.norm", ("transitions", t, "norm"), transition.norm)
    keys |= conv_keys(f"{prefix}.conv", ("transitions", t, "conv"), transition.conv)
  keys |= norm_keys(f"{p}features.norm5", ("norm5",), model.norm5)
  if isinstance(model.head, StandardDense):
    return keys | linear_keys(f"{p}classifier", ("head",), model.head)
  return keys | conv_keys(f"{p}classifier", ("head",), model.head)


def _head_input(model: BcosDenseNet) -> tuple[str, str]:
  return "head", "input"


def _last_features(model: BcosDenseNet) -> tuple[str, str]:
  """torchvision's `features` end in norm5 (the head sees the pooled vector)."""
  return "norm5", "output"


FAMILY = registry.Family("densenet", BcosDenseNet, torch_keys, grad_cam_layer=_head_input)
# torchvision's DenseNets, with torchvision's keys; their forward ends in a ReLU.
STANDARD_FAMILY = registry.Family(
    "standard_densenet", BcosDenseNet, torch_keys, grad_cam_layer=_last_features,
    input_encoding="imagenet_normalized_rgb", bcos=False,
    defaults={**STANDARD_OPTIONS, "final_relu": True})
# B-cosified torchvision DenseNets, with the keys of the official `BcosifyNetwork`.
BCOSIFIED_FAMILY = registry.Family(
    "bcosified_densenet", BcosDenseNet, torch_keys, grad_cam_layer=_head_input, converted=True,
    defaults={**BCOSIFIED_OPTIONS, "final_relu": True})

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
_121 = dict(growth_rate=32, block_config=(6, 12, 24, 16), stem_width=64)
_161 = dict(growth_rate=48, block_config=(6, 12, 36, 24), stem_width=96)
_169 = dict(growth_rate=32, block_config=(6, 12, 32, 32), stem_width=64)
_201 = dict(growth_rate=32, block_config=(6, 12, 48, 32), stem_width=64)
registry.register("standard_densenet121", STANDARD_FAMILY, **_121)
registry.register("standard_densenet161", STANDARD_FAMILY, **_161)
registry.register("standard_densenet169", STANDARD_FAMILY, **_169)
registry.register("standard_densenet201", STANDARD_FAMILY, **_201)
_M = BCOSIFIED_TORCH_PREFIX
registry.register("bcosified_densenet121", BCOSIFIED_FAMILY, torch_prefix=_M, **_121)
registry.register("bcosified_densenet161", BCOSIFIED_FAMILY, torch_prefix=_M, **_161)
registry.register("bcosified_densenet169", BCOSIFIED_FAMILY, torch_prefix=_M, **_169)
registry.register("bcosified_densenet201", BCOSIFIED_FAMILY, torch_prefix=_M, **_201)
