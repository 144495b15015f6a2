"""Rematerialisation of a model's blocks: the `remat` builder option of the families.

With `remat=True` a model recomputes each block in the backward pass instead
of storing its activations (less memory for about one more forward pass of
compute; the variables, outputs and gradients are the same). Views with
`deterministic=True` (`models.eval_mode`: evaluation, explanations,
attribution methods, probes) run the blocks plainly: they train nothing, and
a probe must read a block's values in its own trace.

XLA:CPU's `cse_barrier_expander` pass removes the recomputation barriers, so
on CPU the memory is only saved with
`XLA_FLAGS=--xla_disable_hlo_passes=cse_barrier_expander` (`bench/memory.py`
sets it); accelerator compilers keep them.
"""

from collections.abc import Callable

import jax
from flax import nnx

BlockCall = Callable[[nnx.Module, jax.Array, bool], jax.Array]


def call_block(block: nnx.Module, x: jax.Array, explain: bool) -> jax.Array:
  return block(x, explain=explain)


def recomputed(call: BlockCall) -> BlockCall:
  """`call(module, x, explain)` recomputed in the backward pass: only its inputs are stored.

  `explain` is static (it chooses the code); graph_updates=False writes back only the
  variables the block changes (norm statistics, the stochastic-depth stream's counter).
  """
  return nnx.remat(call, static_argnums=(2,), graph_updates=False)


RECOMPUTED_CALL = recomputed(call_block)


class Rematerialisable:
  """A model mixin: `self.remat` (the builder option) and the view that turns it off.

  The model sets `self.remat` and `self.deterministic = False` in its constructor.
  """
  remat: bool
  deterministic: bool

  def set_view(self, deterministic: bool | None = None):
    """Used by `nnx.view`: deterministic=True (`models.eval_mode`) turns remat off."""
    if deterministic is not None:
      self.deterministic = deterministic

  def recomputes(self) -> bool:
    """Whether this call recomputes its blocks: remat, and not an evaluation view."""
    return self.remat and not self.deterministic
