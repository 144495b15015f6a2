"""Saving and loading models with their config: a directory anyone can rebuild from.

DIR/model_config.json holds the registry name and every builder argument;
DIR/state is an orbax checkpoint of the model's variables.
"""

import json
import pathlib

import orbax.checkpoint as ocp
from flax import nnx

from bcos_jax.models import registry


def tuples(value):
  """JSON lists back to the tuples the builders were given (configs are hashable)."""
  if isinstance(value, list):
    return tuple(tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: tuples(v) for k, v in value.items()}
  return value


def save(model: nnx.Module, directory: str | pathlib.Path) -> pathlib.Path:
  """Writes `model` (built by `bcos_jax.models.create`) to `directory`."""
  config = getattr(model, "config", None)
  if config is None:
    raise ValueError("only models built by bcos_jax.models.create carry the config to save")
  directory = pathlib.Path(directory).absolute()
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "model_config.json").write_text(json.dumps(config.as_dict(), indent=2,
                                                          default=list))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "state", nnx.state(model), force=True)
  return directory


def load(directory: str | pathlib.Path) -> nnx.Module:
  """Rebuilds a saved model: its architecture from the config, then its variables.

  Raises:
    FileNotFoundError: when `directory` holds no saved model.
  """
  directory = pathlib.Path(directory).absolute()
  config_path = directory / "model_config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{directory} holds no bcos_jax model (no model_config.json); "
                            "write one with bcos_jax.models.save or python -m bcos_jax.convert")
  options = tuples(json.loads(config_path.read_text()))
  name = options.pop("name")
  abstract = nnx.eval_shape(lambda: registry.create(name, rngs=nnx.Rngs(0), **options))
  graphdef, abstract_state = nnx.split(abstract)
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(directory / "state", abstract_state)
  model = nnx.merge(graphdef, state)
  return nnx.view(model, use_running_average=True, deterministic=True,
                  raise_if_not_found=False)
