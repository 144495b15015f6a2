"""The model a training run starts from: a random one, or the variables of `config.init_from`.

Fine-tuning starts from what `bcos_jax.models.load` opens (a saved model, or a
training workdir's newest checkpoint: its parameter average when that run kept
one). Its parameters and batch statistics replace the random initialisation;
the model itself is built from the config (with an empty `config.model.name`:
from the loaded model's config, `config.model.overrides` on top), so the new
run's checkpoints say what it trains.
"""

import pathlib

import orbax.checkpoint as ocp
from flax import nnx
from ml_collections import ConfigDict

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.models.registry import ModelConfig
from bcos_jax.models.saving import CHECKPOINTS_DIR, MODEL_CONFIG_FILE

# What is learnt; the other variables (e.g. stochastic depth's random streams) stay the new run's.
CARRIED = (nnx.Param, nnx.BatchStat)
MAX_LISTED = 10


def _describe(config: ModelConfig) -> str:
  """'resnet18 (num_classes=10)': the name and the arguments its registered model lacks."""
  registered = dict(models.config_for(config.name).kwargs)
  changed = [f"{key}={value!r}" for key, value in config.kwargs
             if key not in registered or registered[key] != value]
  return f"{config.name} ({', '.join(changed)})" if changed else config.name


def _newest_step(directory: pathlib.Path) -> int | None:
  """The step `models.load(directory)` reads; None for a saved model (it has no step)."""
  if (directory / MODEL_CONFIG_FILE).is_file() or not (directory / CHECKPOINTS_DIR).is_dir():
    return None
  return max(ocp.utils.checkpoint_steps(directory / CHECKPOINTS_DIR), default=None)


def _shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  return {".".join(map(str, path)): tuple(variable.shape)
          for path, variable in nnx.to_flat_state(nnx.state(model, CARRIED))}


def _mismatches(loaded: nnx.Module, model: nnx.Module) -> list[str]:
  """'path: init_from's shape vs the config's' for every variable the two do not share."""
  old, new = _shapes(loaded), _shapes(model)
  return [f"{path} {old.get(path, 'absent')} vs {new.get(path, 'absent')}"
          for path in sorted(old.keys() | new.keys()) if old.get(path) != new.get(path)]


def initial_model(config: ConfigDict) -> tuple[nnx.Module, str | None]:
  """The model a run of `config` starts from, initialised with `nnx.Rngs(config.seed)`.

  Args:
    config: a complete training config (`config_schema.complete`).

  Returns:
    The model and, when its variables come from `config.init_from`, the console line
    that says from where.

  Raises:
    UserError: an unknown model or option, a `config.init_from` that holds no model
      (`ModelNotFoundError`), or one whose model `config.model` does not name.
  """
  rngs = nnx.Rngs(config.seed)
  if config.init_from is None:
    if config.model.name and models.info(config.model.name).family.converted:
      raise UserError(f"{config.model.name} is made by converting a trained network, not "
                       "trained from a random initialisation: convert one (python -m "
                       "bcos_jax.convert --bcosify --torch_checkpoint FILE.pth --out DIR) and "
                       "set config.init_from=DIR")
    return models.create(config.model.name, rngs=rngs, **config.model.overrides), None
  directory = pathlib.Path(config.init_from)
  step = _newest_step(directory)  # passed on, so the line names the step that was loaded
  loaded = models.load(directory, step=step)
  source = loaded.config
  holds = f"config.init_from={config.init_from} holds a {_describe(source)}"
  if config.model.name and config.model.name != source.name:
    raise UserError(f"{holds}, but config.model.name is {config.model.name}: fine-tuning "
                    f"needs init_from's architecture; set config.model.name={source.name} or "
                    "leave it empty")
  given = {} if config.model.name else dict(source.kwargs)
  model = models.create(source.name, rngs=rngs, **{**given, **config.model.overrides})
  mismatches = _mismatches(loaded, model)
  if mismatches:
    more = len(mismatches) - MAX_LISTED
    listed = ", ".join(mismatches[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
    raise UserError(
        f"{holds}, but config.model makes a {_describe(model.config)}, whose variables have "
        f"other shapes (init_from's vs the config's): {listed}; set config.model.overrides "
        "as init_from's, or leave config.model.name empty and drop the overrides that change "
        "shapes")
  nnx.update(model, nnx.state(loaded, CARRIED))
  at = "" if step is None else f", step {step}"
  return model, f"initialised from {config.init_from} ({source.name}{at})"
