"""Saving and loading models with their config: one loader for every kind of model directory.

A saved model (`save`, `python -m bcos_jax.convert`):
  DIR/model_config.json   the registry name and every builder argument;
  DIR/state               an orbax checkpoint of the model's variables.
A training run's workdir (`bcos_jax.train`):
  DIR/checkpoints/<step>/{state, config, data}   the train state, the model
  config and the data iterator; `load` reads the model from the newest one.
"""

import json
import pathlib

import jax
import orbax.checkpoint as ocp
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.contract import eval_mode

MODEL_CONFIG_FILE = "model_config.json"


class ModelNotFoundError(UserError, FileNotFoundError):
  """A path that holds neither a saved model nor a training run's checkpoints."""


# The layout of a training workdir's checkpoints (written by bcos_jax.train.checkpointing).
CHECKPOINTS_DIR = "checkpoints"
STATE_ITEM, CONFIG_ITEM = "state", "config"


def tuples(value):
  """JSON lists back to the tuples the builders were given (configs are hashable)."""
  if isinstance(value, list):
    return tuple(tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: tuples(v) for k, v in value.items()}
  return value


def config_as_json(model: nnx.Module) -> dict:
  """The model's registry name and builder arguments as plain JSON values."""
  config = getattr(model, "config", None)
  if not isinstance(config, registry.ModelConfig):
    raise UserError("only models built by bcos_jax.models.create carry the config to save")
  return json.loads(json.dumps(config.as_dict(), default=list))


def save(model: nnx.Module, directory: str | pathlib.Path) -> pathlib.Path:
  """Writes `model` (built by `bcos_jax.models.create`) to `directory`."""
  config = config_as_json(model)
  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  (directory / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "state", nnx.state(model), force=True)
  return directory


def _abstract_model(config: dict) -> nnx.Module:
  options = tuples(dict(config))
  name = options.pop("name")
  return nnx.eval_shape(lambda: registry.create(name, rngs=nnx.Rngs(0), **options))


def _pure(tree):
  """A restored nnx.State (variables stored as {'value': array}, list indices as
  strings) as the pure dict `nnx.replace_by_pure_dict` takes."""
  if not isinstance(tree, dict):
    return tree
  if tree.keys() == {"value"}:
    return tree["value"]
  return {int(k) if isinstance(k, str) and k.isdigit() else k: _pure(v) for k, v in tree.items()}


def _load_saved(directory: pathlib.Path) -> nnx.Module:
  abstract = _abstract_model(json.loads((directory / MODEL_CONFIG_FILE).read_text()))
  graphdef, abstract_state = nnx.split(abstract)
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(directory / "state", abstract_state)
  return nnx.merge(graphdef, state)


def _load_checkpoint(workdir: pathlib.Path, step: int | None, ema: bool | None) -> nnx.Module:
  # Only the model's items: the data iterator's state is not needed (nor grain).
  manager = ocp.CheckpointManager(
      workdir / CHECKPOINTS_DIR, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(),
                     CONFIG_ITEM: ocp.JsonCheckpointHandler()})
  with manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise ModelNotFoundError(f"{workdir / CHECKPOINTS_DIR} holds no checkpoint; train with "
                              "python -m bcos_jax.main first")
    config = manager.restore(step, args=ocp.args.Composite(
        **{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]
    # Onto this process's first device, whatever the topology the run was saved on
    # (e.g. trained on 8 accelerators, evaluated on one).
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    stored = manager.restore(step, args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardRestore(fallback_sharding=here)}))[STATE_ITEM]
  graphdef, params, rest = nnx.split(_abstract_model(config), nnx.Param, ...)
  has_ema = bool(stored.get("ema_params"))
  if ema and not has_ema:
    raise UserError(f"the checkpoint of step {step} in {workdir} keeps no parameter average "
                     "(the run had no ema_decay): load it with ema=False")
  use_ema = has_ema if ema is None else ema
  nnx.replace_by_pure_dict(params, _pure(stored["ema_params" if use_ema else "params"]))
  nnx.replace_by_pure_dict(rest, _pure(stored["model_state"]))
  return nnx.merge(graphdef, params, rest)


def load(directory: str | pathlib.Path, *, step: int | None = None,
         ema: bool | None = None) -> nnx.Module:
  """Loads a model in evaluation mode from a saved-model directory or a training workdir.

  Args:
    directory: written by `save` / `python -m bcos_jax.convert`, or a workdir
      of `python -m bcos_jax.main` (its newest checkpoint, or `step`).
    step: a training workdir's checkpoint step (default: the newest).
    ema: for a training workdir, use the parameter average (default: when the
      run kept one, as its evaluations did).

  Raises:
    FileNotFoundError: when `directory` holds neither.
  """
  directory = pathlib.Path(directory).absolute()
  if (directory / MODEL_CONFIG_FILE).is_file():
    if step is not None or ema:
      raise UserError(f"{directory} is a saved model, not a training workdir: it has one "
                       "set of weights (no step or EMA to choose)")
    model = _load_saved(directory)
  elif (directory / CHECKPOINTS_DIR).is_dir():
    model = _load_checkpoint(directory, step, ema)
  else:
    raise ModelNotFoundError(
        f"{directory} holds no bcos_jax model: neither {MODEL_CONFIG_FILE} (write one with "
        "bcos_jax.models.save or python -m bcos_jax.convert) nor a training run's "
        f"{CHECKPOINTS_DIR}/ (python -m bcos_jax.main)")
  return eval_mode(model)
