"""The logit layer: a fixed temperature and bias after the last B-cos layer.

B-cos outputs are bounded by the input norm (Eq. 4), so BCE training needs a
fixed temperature, and a bias sets the prior of each logit (log(0.1/0.9) for
10 classes). Both are constants of the model config, not parameters.
"""

import jax
from flax import nnx


class LogitLayer(nnx.Module):
  """y = x / temperature + bias. A bias of exactly 0 is kept as 0.

  It holds no parameters: its two constants belong to the model config.
  """

  def __init__(self, temperature: float = 1.0, bias: float = 0.0):
    if temperature == 0:
      raise ValueError("logit temperature must be non-zero")
    self.temperature = float(temperature)
    self.bias = float(bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x / self.temperature + self.bias
