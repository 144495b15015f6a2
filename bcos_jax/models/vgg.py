"""B-cos VGG-11: v2 (`vgg11_bnu`) and v1 (`v1_vgg11`, CVPR 2022).

VGG-11 without ReLU or dropout: max pooling becomes 2×2 average pooling and
the fully connected classifier three B-cos convs (7×7 with padding 3, then
two 1×1) applied at every position before global average pooling.
- v2: each 3×3 conv is followed by an uncentered BatchNorm without bias;
- v1: no norm layers, MaxOut 2, every conv's output scale
  `k·sqrt(in)/1000`, logits mean / 0.1 + log(0.01/0.99).
"""

import math
from collections.abc import Sequence

import jax
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.nn import BcosConv, LogitLayer, check_encoded, make_norm

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class ConvNorm(nnx.Module):
  def __init__(self, c_in, c_out, *, norm, rngs, **conv):
    self.conv = BcosConv(c_in, c_out, 3, padding=1, rngs=rngs, **conv)
    self.norm = make_norm(norm, c_out) if norm else None

  def __call__(self, x, *, explain=False):
    x = self.conv(x, explain=explain)
    return self.norm(x, explain=explain) if self.norm is not None else x


class BcosVGG(nnx.Module):
  """A B-cos VGG on NHWC images encoded with `add_inverse`.

  Args:
    layers: channels of the 3×3 convs, "M" for a 2×2 average pooling.
    num_classes: logits.
    hidden: channels of the convolutional classifier.
    b: alignment pressure of every B-cos conv.
    max_out: MaxOut units per channel (v1: 2).
    scale: a fixed output scale of every conv; None: the v1 default
      `k·sqrt(in)/scale_factor`.
    scale_factor: see `scale` (the v1 VGG uses 1000).
    norm: a `bcos_jax.nn.NORM_LAYERS` name, or "" for none.
    logit_temperature, logit_bias: bias None means -log(num_classes - 1).
    rngs: initialisation randomness.
  """

  def __init__(self, *, layers: Sequence[int | str] = VGG11, num_classes: int = 1000,
               hidden: int = 4096, b: float = 2.0, max_out: int = 1,
               scale: float | None = 1.0, scale_factor: float = 1000.0,
               norm: str = "NoBias(BatchNormUncentered2d)", logit_temperature: float = 1.0,
               logit_bias: float | None = None, rngs: nnx.Rngs):
    self.layers = tuple(layers)
    conv = dict(b=b, max_out=max_out, scale=scale, scale_factor=scale_factor)
    blocks, c_in = [], 6
    for entry in self.layers:
      if entry != "M":
        blocks.append(ConvNorm(c_in, entry, norm=norm, rngs=rngs, **conv))
        c_in = entry
    self.blocks = nnx.List(blocks)
    self.classifier = nnx.List([
        BcosConv(c_in, hidden, 7, padding=3, rngs=rngs, **conv),
        BcosConv(hidden, hidden, 1, rngs=rngs, **conv),
        BcosConv(hidden, num_classes, 1, rngs=rngs, **conv),
    ])
    bias = -math.log(num_classes - 1) if logit_bias is None else logit_bias
    self.logit_layer = LogitLayer(logit_temperature, bias)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    check_encoded(x, "BcosVGG")
    blocks = iter(self.blocks)
    for entry in self.layers:
      if entry == "M":
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
      else:
        x = next(blocks)(x, explain=explain)
    for conv in self.classifier:
      x = conv(x, explain=explain)
    return self.logit_layer(x.mean(axis=(1, 2)))


registry.register("vgg11_bnu", BcosVGG, layers=VGG11)
registry.register("v1_vgg11", BcosVGG, layers=VGG11, max_out=2, scale=None, norm="",
                  logit_temperature=0.1, logit_bias=math.log(0.01 / 0.99))
