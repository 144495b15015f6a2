"""The train state: the model's parameters and other variables, the optimiser state, the step."""

import flax.struct
import jax
import optax
from flax import nnx

from bcos_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
  """Everything a training step changes; a pytree, so it can be jitted, sharded, saved.

  Attributes:
    step: the number of training steps (batches) taken.
    params: the model's `nnx.Param` state.
    model_state: the model's other variables (e.g. BatchNorm running variances).
    opt_state: the optax state.
    ema_params: an exponential moving average of `params` (the v2 long
      recipes evaluate it), or an empty dict when the run keeps none.
  """
  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState
  ema_params: nnx.State | dict = flax.struct.field(default_factory=dict)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, params, other variables)."""
  return nnx.split(model, nnx.Param, ...)


def create(model: nnx.Module, optimizer: optax.GradientTransformation, ema: bool = False
           ) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, model_state = split_model(model)
  state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                     model_state=model_state, opt_state=optimizer.init(params),
                     ema_params=jax.tree.map(jax.numpy.copy, params) if ema else {})
  return graphdef, state


def model_of(graphdef: nnx.GraphDef, state: TrainState, ema: bool = False) -> nnx.Module:
  """The model with the state's parameters (or their moving average, `ema=True`)."""
  if ema and not state.ema_params:
    raise UserError("this run keeps no parameter average: set config.ema_decay")
  return nnx.merge(graphdef, state.ema_params if ema else state.params, state.model_state)
