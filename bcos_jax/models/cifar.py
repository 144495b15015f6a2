"""The CIFAR-10 network of the CVPR 2022 paper (Sec. C.1.1).

Nine B-cos convolutions (3×3 kernels, then a 1×1 classifier), global average
pooling and a logit layer; no norm layers, no ReLU: MaxOut and B > 1 are the
only non-linearities.
"""

import math
from collections.abc import Sequence

import jax
from flax import nnx

from bcos_jax.models import registry
from bcos_jax.nn import BcosConv, LogitLayer, check_encoded

CHANNELS = (64, 64, 128, 128, 128, 256, 256, 256)
STRIDES = (1, 1, 2, 1, 1, 2, 1, 1, 1)

# Logit temperature exponents T (temperature 10**T) of the official v1
# CIFAR-10 experiments, per B.
V1_LOGIT_TEMPERATURE_EXPONENT = {1.0: -3, 1.25: -3, 1.5: -2, 1.75: 1, 2.0: 2, 2.25: 2, 2.5: 3}
V1_BS = tuple(V1_LOGIT_TEMPERATURE_EXPONENT)


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
    logit_temperature: logits = mean_pool(features) / temperature + bias.
    logit_bias: the prior log-odds of each class.
    channels: channels of the eight 3×3 layers.
    strides: strides of all nine layers.
    rngs: initialisation randomness.
  """

  def __init__(self, *, num_classes: int = 10, b: float = 2.0, max_out: int = 2,
               scale: float = 1.0, logit_temperature: float = 1.0,
               logit_bias: float = math.log(0.1 / 0.9), channels: Sequence[int] = CHANNELS,
               strides: Sequence[int] = STRIDES, rngs: nnx.Rngs):
    if len(strides) != len(channels) + 1:
      raise ValueError(f"need one stride per layer ({len(channels) + 1}), got {len(strides)}")
    widths = (6, *channels, num_classes)
    kernels = (3,) * len(channels) + (1,)
    self.layers = nnx.List([
        BcosConv(c_in, c_out, k, strides=s, padding=k // 2, b=b, max_out=max_out, scale=scale,
                 rngs=rngs)
        for c_in, c_out, k, s in zip(widths[:-1], widths[1:], kernels, strides, strict=True)
    ])
    self.logit_layer = LogitLayer(logit_temperature, logit_bias)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    """Logits (N, num_classes) of encoded NHWC images (N, H, W, 6)."""
    check_encoded(x, "CifarNet9L")
    for layer in self.layers:
      x = layer(x, explain=explain)
    return self.logit_layer(x.mean(axis=(1, 2)))


def _register() -> None:
  for b in V1_BS:
    constants = dict(b=b, scale=v1_layer_scale(b),
                     logit_temperature=10.0 ** V1_LOGIT_TEMPERATURE_EXPONENT[b],
                     logit_bias=math.log(0.1 / 0.9))
    registry.register(f"v1_cifar9l_b{b:g}", CifarNet9L, max_out=2, **constants)
    if b == 2:
      registry.register(f"v1_cifar9l_plain_b{b:g}", CifarNet9L, max_out=1, **constants)


_register()
