"""The CIFAR-10 network of the CVPR 2022 paper (Sec. C.1.1).

Nine B-cos convolutions (3×3 kernels, then a 1×1 classifier, the head),
global average pooling and a logit layer; no norm layers, no ReLU: MaxOut
and B > 1 are the only non-linearities.
"""

import math
from collections.abc import Sequence

import jax
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.torch_keys import KeyMap, conv_keys
from bcos_jax.nn import ConvOptions, LogitLayer, check_encoded

WIDTHS = (64, 64, 128, 128, 128, 256, 256, 256)
STRIDES = (1, 1, 2, 1, 1, 2, 1, 1, 1)


def v1_layer_scale(b: float) -> float:
  """The official v1 CIFAR-10 output scale of every layer: 10**(-2 + 1.5·(2.5 - B))."""
  return 10 ** (-2 + 1.5 * (2.5 - b))


class CifarNet9L(nnx.Module):
  """The paper's 9-layer B-cos CNN for 32×32 images.

  Args:
    num_classes: logits.
    b: alignment pressure of every layer.
    max_out: MaxOut units per channel (2 in the paper, 1 for the plain net).
    scale: the v1 output scale of every layer.
    logit_temperature: logits = mean_pool(head) / temperature + bias.
    logit_bias: the prior log-odds of each class.
    widths: channels of the eight 3×3 layers.
    strides: strides of all nine layers (the last is the head's).
    rngs: initialisation randomness.
  """

  def __init__(self, *, num_classes: int = 10, b: float = 2.0, max_out: int = 2,
               scale: float = 1.0, logit_temperature: float = 1.0,
               logit_bias: float = math.log(0.1 / 0.9), widths: Sequence[int] = WIDTHS,
               strides: Sequence[int] = STRIDES, rngs: nnx.Rngs):
    if len(strides) != len(widths) + 1:
      raise UserError(f"need one stride per layer ({len(widths) + 1}), got {len(strides)}")
    conv = ConvOptions(b=b, max_out=max_out, scale=scale)
    c_in = (6, *widths)
    self.layers = nnx.List([
        conv.conv(i, o, 3, strides=s, padding=1, rngs=rngs)
        for i, o, s in zip(c_in[:-1], widths, strides[:-1], strict=True)])
    self.head = conv.conv(c_in[-1], num_classes, 1, strides=strides[-1], rngs=rngs)
    self.logit_layer = LogitLayer(logit_temperature, logit_bias)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    """Logits (N, num_classes) of encoded NHWC images (N, H, W, 6)."""
    check_encoded(x, "CifarNet9L")
    for layer in self.layers:
      x = layer(x, explain=explain)
    return self.logit_layer(self.head(x, explain=explain).mean(axis=(1, 2)))


def torch_keys(model: CifarNet9L, prefix: str) -> KeyMap:
  """The official v1 net is one Sequential of the nine convs."""
  keys = {}
  for i in range(len(model.layers)):
    keys |= conv_keys(f"{prefix}{i}", ("layers", i))
  return keys | conv_keys(f"{prefix}{len(model.layers)}", ("head",))


FAMILY = registry.Family("cifar9l", CifarNet9L, torch_keys,
                         grad_cam_layer=lambda model: ("head", "input"))

# The v1 CIFAR-10 experiments: per B, the layer scale 10**(-2 + 1.5·(2.5 - B))
# and the logit temperature 10**T of the official configs.
_V1 = dict(max_out=2, logit_bias=math.log(0.1 / 0.9))
registry.register("v1_cifar9l_b1", FAMILY, b=1.0, scale=v1_layer_scale(1.0),
                  logit_temperature=10.0 ** -3, **_V1)
registry.register("v1_cifar9l_b1.25", FAMILY, b=1.25, scale=v1_layer_scale(1.25),
                  logit_temperature=10.0 ** -3, **_V1)
registry.register("v1_cifar9l_b1.5", FAMILY, b=1.5, scale=v1_layer_scale(1.5),
                  logit_temperature=10.0 ** -2, **_V1)
registry.register("v1_cifar9l_b1.75", FAMILY, b=1.75, scale=v1_layer_scale(1.75),
                  logit_temperature=10.0 ** 1, **_V1)
registry.register("v1_cifar9l_b2", FAMILY, b=2.0, scale=v1_layer_scale(2.0),
                  logit_temperature=10.0 ** 2, **_V1)
registry.register("v1_cifar9l_b2.25", FAMILY, b=2.25, scale=v1_layer_scale(2.25),
                  logit_temperature=10.0 ** 2, **_V1)
registry.register("v1_cifar9l_b2.5", FAMILY, b=2.5, scale=v1_layer_scale(2.5),
                  logit_temperature=10.0 ** 3, **_V1)
registry.register("v1_cifar9l_plain_b2", FAMILY, b=2.0, scale=v1_layer_scale(2.0),
                  logit_temperature=10.0 ** 2, max_out=1, logit_bias=math.log(0.1 / 0.9))
