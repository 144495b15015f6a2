"""The train state: the model's parameters and other variables, the optimiser state, the step."""

import flax.struct
import jax
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
  """Everything a training step changes; a pytree, so it can be jitted, sharded, saved.

  Attributes:
    step: the number of optimiser steps taken.
    params: the model's `nnx.Param` state.
    model_state: the model's other variables (e.g. BatchNorm running variances).
    opt_state: the optax state.
  """
  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, params, other variables)."""
  return nnx.split(model, nnx.Param, ...)


def create(model: nnx.Module, optimizer: optax.GradientTransformation
           ) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, model_state = split_model(model)
  state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                     model_state=model_state, opt_state=optimizer.init(params))
  return graphdef, state


def model_of(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
  return nnx.merge(graphdef, state.params, state.model_state)
