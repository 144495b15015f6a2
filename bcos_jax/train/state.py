"""The train state: the model's parameters and other variables, the optimiser state, the step."""

from collections.abc import Callable

import flax.struct
import jax
import optax
from flax import nnx

from bcos_jax import models, sharding
from bcos_jax.errors import UserError

# The labels of `param_labels`: the optimiser can treat the two groups differently.
HEAD, BACKBONE = "head", "backbone"


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


def head_attributes(model: nnx.Module) -> tuple[str, ...]:
  """The model's classifiers: `head` (every family's name for it) and an auxiliary one.

  Inception-v3's auxiliary classifier (its family's `aux_head`) ends in the classes' logits
  as well, so it counts as a head: a new head replaces it too, and a linear probe trains it.
  """
  aux = (models.info(model).family.aux_head,) if models.has_aux_head(model) else ()
  return ("head", *aux)


def param_labels(model: nnx.Module) -> nnx.State:
  """HEAD or BACKBONE for each of the model's parameters (`optax.multi_transform` labels)."""
  heads = head_attributes(model)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: HEAD if path[0].key in heads else BACKBONE, nnx.state(model, nnx.Param))


def create(model: nnx.Module, optimizer: optax.GradientTransformation, ema: bool = False
           ) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, model_state = split_model(model)
  state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                     model_state=model_state, opt_state=optimizer.init(params),
                     ema_params=jax.tree.map(jax.numpy.copy, params) if ema else {})
  return graphdef, state


def create_sharded(build_model: Callable[..., nnx.Module], optimizer: optax.GradientTransformation,
                   mesh: jax.sharding.Mesh, *, ema: bool = False, args: tuple = ()
                   ) -> tuple[TrainState, Callable[[], TrainState]]:
  """The train state's layout, and a function that creates it, sharded from the first byte.

  The state is made inside one `jax.jit` whose `out_shardings` are
  `sharding.state_sharding`'s, so with fsdp > 1 no device (and no host) ever
  holds more than its shards. A run that resumes never calls `create`: it
  restores into the returned layout.

  Args:
    build_model: `build_model(*args)` -> the model (traced: it builds the variables
      inside the jit); e.g. `models.create(name, rngs=nnx.Rngs(seed))`.
    optimizer: the run's optimiser (its state is created too).
    mesh: the device mesh.
    ema: whether the state keeps a parameter average.
    args: arrays `build_model` takes (e.g. the variables of a loaded model), placed by
      the same rule (`sharding.place_state`) before they enter the jit.

  Returns:
    (abstract state: `jax.ShapeDtypeStruct`s with their shardings, create()).
  """

  def make(*args) -> TrainState:
    return create(build_model(*args), optimizer, ema=ema)[1]

  abstract = sharding.abstract_state(jax.eval_shape(make, *args), mesh)
  shardings = jax.tree.map(lambda leaf: leaf.sharding, abstract)
  # Loaded variables may sit on one device: each device takes its shards of them first.
  args = sharding.place_state(args, mesh)
  return abstract, lambda: jax.jit(make, out_shardings=shardings)(*args)


def model_of(graphdef: nnx.GraphDef, state: TrainState, ema: bool = False) -> nnx.Module:
  """The model with the state's parameters (or their moving average, `ema=True`)."""
  if ema and not state.ema_params:
    raise UserError("this run keeps no parameter average: set config.ema_decay")
  return nnx.merge(graphdef, state.ema_params if ema else state.params, state.model_state)
