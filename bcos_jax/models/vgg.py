"""B-cos VGG-11: v2 (`vgg11_bnu`) and v1 (`v1_vgg11`, CVPR 2022).

VGG-11 without ReLU or dropout: max pooling becomes 2×2 average pooling and
the fully connected classifier three B-cos convs (7×7 with padding 3 and a
1×1, the `hidden` fc6/fc7, then the 1×1 head) applied at every position
before global average pooling.
- v2: each 3×3 conv is followed by an uncentered BatchNorm without bias;
- v1: no norm layers, MaxOut 2, the v1 per-layer scale with divisor 1000,
  logits mean / 0.1 + log(0.01/0.99).
"""

import math
from collections.abc import Sequence

import jax
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.models.torch_keys import KeyMap, conv_keys, norm_keys
from bcos_jax.nn import ConvNorm, ConvOptions, LogitLayer, avg_pool, check_encoded

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class BcosVGG(nnx.Module):
  """A B-cos VGG on NHWC images encoded with `add_inverse`.

  Args:
    layers: channels of the 3×3 convs, "M" for a 2×2 average pooling.
    num_classes: logits.
    hidden_width: channels of the two hidden convs of the classifier (fc6, fc7).
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel (v1: 2).
    scale: a fixed output divisor of every conv (v2: 1).
    v1_scale_divisor: when set, every conv divides by `sqrt(k·k)·sqrt(in)/v1_scale_divisor`
      instead (v1 VGG: 1000).
    norm: a `bcos_jax.nn.NORM_LAYERS` name, or "" for none.
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, layers: Sequence[int | str] = VGG11, num_classes: int = 1000,
               hidden_width: int = 4096, b: float = 2.0, max_out: int = 1,
               scale: float = 1.0, v1_scale_divisor: float | None = None,
               norm: str = "NoBias(BatchNormUncentered2d)", logit_temperature: float = 1.0,
               logit_bias: float | None = None, rngs: nnx.Rngs):
    self.layers = tuple(layers)
    conv = ConvOptions(b=b, max_out=max_out, scale=scale, v1_scale_divisor=v1_scale_divisor)
    blocks, c_in = [], 6
    for entry in self.layers:
      if entry != "M":
        blocks.append(ConvNorm(c_in, entry, 3, conv=conv, norm=norm, rngs=rngs))
        c_in = entry
    self.blocks = nnx.List(blocks)
    self.hidden = nnx.List([conv.conv(c_in, hidden_width, 7, padding=3, rngs=rngs),
                            conv.conv(hidden_width, hidden_width, 1, rngs=rngs)])
    self.head = conv.conv(hidden_width, num_classes, 1, rngs=rngs)
    self.logit_layer = LogitLayer(logit_temperature, logit_bias, num_classes)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosVGG")
    blocks = iter(self.blocks)
    for entry in self.layers:
      x = avg_pool(x, 2, 2) if entry == "M" else next(blocks)(x, explain=explain)
    for conv in self.hidden:
      x = conv(x, explain=explain)
    return self.logit_layer(self.head(x, explain=explain).mean(axis=(1, 2)))


def torch_keys(model: BcosVGG, p: str) -> KeyMap:
  """torchvision's Sequential `features` (conv, norm per conv; one pooling per "M")
  and `classifier` (fc6, fc7, the head)."""
  keys, index, blocks = {}, 0, iter(enumerate(model.blocks))
  for entry in model.layers:
    if entry == "M":
      index += 1
      continue
    b, block = next(blocks)
    keys |= conv_keys(f"{p}features.{index}", ("blocks", b, "conv"))
    index += 1
    if block.norm is not None:
      keys |= norm_keys(f"{p}features.{index}", ("blocks", b, "norm"), block.norm)
      index += 1
  for i in range(len(model.hidden)):
    keys |= conv_keys(f"{p}classifier.{i}", ("hidden", i))
  return keys | conv_keys(f"{p}classifier.{len(model.hidden)}", ("head",))


FAMILY = registry.Family("vgg", BcosVGG, torch_keys,
                         grad_cam_layer=lambda model: ("hidden.0", "input"))

registry.register("vgg11_bnu", FAMILY, layers=VGG11)
registry.register("v1_vgg11", FAMILY, torch_prefix="0.", layers=VGG11, max_out=2,
                  v1_scale_divisor=1000.0, norm="", logit_temperature=0.1,
                  logit_bias=math.log(0.01 / 0.99))
