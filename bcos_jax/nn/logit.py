"""The logit layer: a fixed temperature and bias after the last B-cos layer.

B-cos outputs are bounded by the input norm (Eq. 4), so BCE training needs a
fixed temperature, and a bias sets the prior of each logit (log(0.1/0.9) for
10 classes). Both are constants of the model config, not parameters.
"""

import math

import jax
from flax import nnx


def uniform_prior_bias(num_classes: int) -> float:
  """-log(C - 1): the log-odds of a class when all C are equally likely (the v2 default)."""
  if num_classes < 2:
    raise ValueError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
  return -math.log(num_classes - 1)


class LogitLayer(nnx.Module):
  """y = x / temperature + bias. A bias of exactly 0 is kept as 0.

  It holds no parameters: its two constants belong to the model config.

  Args:
    temperature: divides the pooled outputs.
    bias: added to every logit; None means `uniform_prior_bias(num_classes)`.
    num_classes: needed only when `bias` is None.
  """

  def __init__(self, temperature: float = 1.0, bias: float | None = 0.0,
               num_classes: int | None = None):
    if temperature == 0:
      raise ValueError("logit temperature must be non-zero")
    if bias is None:
      if num_classes is None:
        raise ValueError("a logit bias of None needs num_classes (for -log(num_classes - 1))")
      bias = uniform_prior_bias(num_classes)
    self.temperature = float(temperature)
    self.bias = float(bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x / self.temperature + self.bias
