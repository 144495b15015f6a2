"""The v1 B-cos Inception-v3 (`v1_inception_v3`, CVPR 2022).

torchvision's Inception-v3 with every conv a v1 B-cos conv (MaxOut 2, output
scale with divisor 200, no BatchNorm, no ReLU), max pooling replaced by
average pooling, and a 1×1 B-cos classifier (the head) applied at every
position before global average pooling; logits = mean + log(0.01/0.99). The
auxiliary head (used for training) is the second output of `logits_with_aux`.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.torch_keys import KeyMap, conv_keys
from bcos_jax.nn import BcosConv, ConvOptions, LogitLayer, avg_pool, check_encoded


def _chain(block, names, x, explain):
  for name in names:
    x = getattr(block, name)(x, explain=explain)
  return x


# Attribute names follow the official module names, so the weight import is a
# renaming of paths.

class InceptionA(nnx.Module):
  def __init__(self, c_in, pool_features, conv):
    self.branch1x1 = conv(c_in, 64, 1)
    self.branch5x5_1 = conv(c_in, 48, 1)
    self.branch5x5_2 = conv(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = conv(c_in, 64, 1)
    self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
    self.branch_pool = conv(c_in, pool_features, 1)

  def __call__(self, x, *, explain=False):
    return jnp.concatenate([
        self.branch1x1(x, explain=explain),
        _chain(self, ("branch5x5_1", "branch5x5_2"), x, explain),
        _chain(self, ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), x, explain),
        self.branch_pool(avg_pool(x, 3, 1, 1), explain=explain)], axis=-1)


class InceptionB(nnx.Module):
  def __init__(self, c_in, conv):
    self.branch3x3 = conv(c_in, 384, 3, strides=2)
    self.branch3x3dbl_1 = conv(c_in, 64, 1)
    self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = conv(96, 96, 3, strides=2)

  def __call__(self, x, *, explain=False):
    return jnp.concatenate([
        self.branch3x3(x, explain=explain),
        _chain(self, ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), x, explain),
        avg_pool(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
  def __init__(self, c_in, c7, conv):
    row, col = dict(padding=(0, 3)), dict(padding=(3, 0))
    self.branch1x1 = conv(c_in, 192, 1)
    self.branch7x7_1 = conv(c_in, c7, 1)
    self.branch7x7_2 = conv(c7, c7, (1, 7), **row)
    self.branch7x7_3 = conv(c7, 192, (7, 1), **col)
    self.branch7x7dbl_1 = conv(c_in, c7, 1)
    self.branch7x7dbl_2 = conv(c7, c7, (7, 1), **col)
    self.branch7x7dbl_3 = conv(c7, c7, (1, 7), **row)
    self.branch7x7dbl_4 = conv(c7, c7, (7, 1), **col)
    self.branch7x7dbl_5 = conv(c7, 192, (1, 7), **row)
    self.branch_pool = conv(c_in, 192, 1)

  def __call__(self, x, *, explain=False):
    return jnp.concatenate([
        self.branch1x1(x, explain=explain),
        _chain(self, [f"branch7x7_{i}" for i in range(1, 4)], x, explain),
        _chain(self, [f"branch7x7dbl_{i}" for i in range(1, 6)], x, explain),
        self.branch_pool(avg_pool(x, 3, 1, 1), explain=explain)], axis=-1)


class InceptionD(nnx.Module):
  def __init__(self, c_in, conv):
    self.branch3x3_1 = conv(c_in, 192, 1)
    self.branch3x3_2 = conv(192, 320, 3, strides=2)
    self.branch7x7x3_1 = conv(c_in, 192, 1)
    self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = conv(192, 192, 3, strides=2)

  def __call__(self, x, *, explain=False):
    return jnp.concatenate([
        _chain(self, ("branch3x3_1", "branch3x3_2"), x, explain),
        _chain(self, [f"branch7x7x3_{i}" for i in range(1, 5)], x, explain),
        avg_pool(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
  def __init__(self, c_in, conv):
    self.branch1x1 = conv(c_in, 320, 1)
    self.branch3x3_1 = conv(c_in, 384, 1)
    self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = conv(c_in, 448, 1)
    self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = conv(c_in, 192, 1)

  def __call__(self, x, *, explain=False):
    b3 = self.branch3x3_1(x, explain=explain)
    d3 = _chain(self, ("branch3x3dbl_1", "branch3x3dbl_2"), x, explain)
    return jnp.concatenate([
        self.branch1x1(x, explain=explain),
        self.branch3x3_2a(b3, explain=explain), self.branch3x3_2b(b3, explain=explain),
        self.branch3x3dbl_3a(d3, explain=explain), self.branch3x3dbl_3b(d3, explain=explain),
        self.branch_pool(avg_pool(x, 3, 1, 1), explain=explain)], axis=-1)


class InceptionAux(nnx.Module):
  def __init__(self, c_in, num_classes, conv):
    self.conv0 = conv(c_in, 128, 1)
    self.conv1 = conv(128, 768, 5)
    self.fc = conv(768, num_classes, 1)

  def __call__(self, x, *, explain=False):
    x = self.conv1(self.conv0(avg_pool(x, 5, 3), explain=explain), explain=explain)
    return self.fc(x, explain=explain).mean(axis=(1, 2))


class BcosInceptionV3(nnx.Module):
  """The v1 B-cos Inception-v3 on NHWC images (299×299) encoded with `add_inverse`.

  Args:
    num_classes: logits.
    aux_logits: build the auxiliary head (its official checkpoints hold one;
      `aux_logits=False` imports a state dict without it).
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel.
    v1_scale_divisor: every conv divides by `sqrt(k·k)·sqrt(in)/v1_scale_divisor`.
    channels_7x7: the 7×7 branch widths of Mixed_6b..6e.
    logit_temperature, logit_bias: logits = pooled / temperature + bias.
    rngs: initialisation randomness.
  """

  def __init__(self, *, num_classes: int = 1000, aux_logits: bool = True, b: float = 2.0,
               max_out: int = 2, v1_scale_divisor: float = 200.0,
               channels_7x7: Sequence[int] = (128, 160, 160, 192),
               logit_temperature: float = 1.0, logit_bias: float = math.log(0.01 / 0.99),
               rngs: nnx.Rngs):
    # Every conv of the model shares its options: conv(c_in, c_out, kernel, ...).
    conv = functools.partial(ConvOptions(b=b, max_out=max_out,
                                         v1_scale_divisor=v1_scale_divisor).conv, rngs=rngs)
    self.Conv2d_1a_3x3 = conv(6, 32, 3, strides=2)
    self.Conv2d_2a_3x3 = conv(32, 32, 3)
    self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = conv(64, 80, 1)
    self.Conv2d_4a_3x3 = conv(80, 192, 3)
    self.Mixed_5b = InceptionA(192, 32, conv)
    self.Mixed_5c = InceptionA(256, 64, conv)
    self.Mixed_5d = InceptionA(288, 64, conv)
    self.Mixed_6a = InceptionB(288, conv)
    self.Mixed_6 = nnx.List([InceptionC(768, c7, conv) for c7 in channels_7x7])
    self.AuxLogits = InceptionAux(768, num_classes, conv) if aux_logits else None
    self.Mixed_7a = InceptionD(768, conv)
    self.Mixed_7b = InceptionE(1280, conv)
    self.Mixed_7c = InceptionE(2048, conv)
    self.head = conv(2048, num_classes, 1)
    self.logit_layer = LogitLayer(logit_temperature, logit_bias)

  def _to_mixed_6(self, x, explain):
    for conv in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3):
      x = conv(x, explain=explain)
    x = avg_pool(x, 3, 2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x, explain=explain), explain=explain)
    x = avg_pool(x, 3, 2)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, *self.Mixed_6):
      x = block(x, explain=explain)
    return x

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosInceptionV3")
    return self._head(self._to_mixed_6(x, explain), explain)

  def _head(self, x, explain):
    for block in (self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
      x = block(x, explain=explain)
    return self.logit_layer(self.head(x, explain=explain).mean(axis=(1, 2)))

  def logits_with_aux(self, x: jax.Array, *, explain: bool = False
                      ) -> tuple[jax.Array, jax.Array]:
    """(logits, the auxiliary head's pooled output (the official `aux_out`)), with
    the shared trunk computed once: the training loss uses both."""
    check_encoded(x, "BcosInceptionV3")
    if self.AuxLogits is None:
      raise UserError("this model was built with aux_logits=False; build it with "
                       "aux_logits=True to train with the auxiliary loss")
    trunk = self._to_mixed_6(x, explain)
    return self._head(trunk, explain), self.AuxLogits(trunk, explain=explain)


def torch_keys(model: BcosInceptionV3, p: str) -> KeyMap:
  """Module paths are the official names (Mixed_6[i] is Mixed_6b..e, the head is fc); the
  official BasicConv2d wraps each conv as ".conv", except the two classifiers."""
  keys = {}
  for path, module in nnx.iter_modules(model):
    if not isinstance(module, BcosConv):
      continue
    official = ("fc",) if path == ("head",) else path
    name = ".".join(f"{part}{'bcde'[official[i + 1]]}" if part == "Mixed_6" else str(part)
                    for i, part in enumerate(official)
                    if not (i and official[i - 1] == "Mixed_6"))
    wrapper = "" if official[-1] == "fc" else ".conv"
    keys |= conv_keys(f"{p}{name}{wrapper}", path)
  return keys


FAMILY = registry.Family("inception", BcosInceptionV3, torch_keys,
                         grad_cam_layer=lambda model: ("head", "input"), aux_head="AuxLogits")

registry.register("v1_inception_v3", FAMILY, torch_prefix="0.")
