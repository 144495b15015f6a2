"""Stochastic depth (row mode): drops a residual branch per example while training.

Kept branches are scaled by 1/(1 - rate), as torchvision's StochasticDepth
does. Evaluation and explanations (`deterministic=True`, set by
`model.eval()` or `nnx.view(model, deterministic=True)`) keep every branch,
so the network stays dynamic-linear.
"""

import jax
from flax import nnx


class StochasticDepth(nnx.Module):
  def __init__(self, rate: float, *, deterministic: bool = False, rngs: nnx.Rngs | None = None):
    if not 0 <= rate < 1:
      raise ValueError(f"the stochastic depth rate must be in [0, 1), got {rate}")
    self.rate = float(rate)
    self.deterministic = deterministic
    # A dropout stream of its own (or the default one): a new mask every step.
    self.rngs = rngs.fork() if (rngs is not None and rate > 0) else None

  def set_view(self, deterministic: bool | None = None):
    """Used by `nnx.view(model, deterministic=...)`."""
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, branch: jax.Array) -> jax.Array:
    if self.deterministic or self.rate == 0:
      return branch
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.rngs.dropout(), keep, (branch.shape[0],) + (1,) * (
        branch.ndim - 1))
    return branch * mask.astype(branch.dtype) / keep
