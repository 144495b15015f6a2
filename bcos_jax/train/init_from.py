"""The model a training run starts from: a random one, or the variables of `config.init_from`.

Fine-tuning starts from what `bcos_jax.models.load` opens (a saved model, or a
training workdir's newest checkpoint: its parameter average when that run kept
one), or from official weights by name (`pretrained:resnet50`, through
`bcos_jax.models.pretrained`: downloaded once, then cached). Its parameters and
batch statistics replace the random initialisation; the model itself is built
from the config (with an empty `config.model.name`: from the loaded model's
config, `config.model.overrides` on top), so the new run's checkpoints say what
it trains.

A data set with other classes needs `config.finetune.new_head`: the classifier
head (`train.state.head_attributes`) is then initialised afresh for the data
set's number of classes, which the new model config records, with the logit
bias the family's recipe gives that number (`_new_head_options`); every other
variable still comes from init_from, shape for shape.
"""

import pathlib

import orbax.checkpoint as ocp
from flax import nnx
from ml_collections import ConfigDict

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.models.registry import ModelConfig
from bcos_jax.models.saving import CHECKPOINTS_DIR, MODEL_CONFIG_FILE
from bcos_jax.nn.logit import uniform_prior_bias
from bcos_jax.train import state as train_state

# What is learnt; the other variables (e.g. stochastic depth's random streams) stay the new run's.
CARRIED = (nnx.Param, nnx.BatchStat)
MAX_LISTED = 10
PRETRAINED = "pretrained:"  # config.init_from=pretrained:NAME: bcos_jax.models.pretrained(NAME)
MODES = ("full", "linear_probe")  # config.finetune.mode


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


def _open(init_from: str) -> tuple[nnx.Module, int | None]:
  """The model `init_from` names, and the checkpoint step it was read from (None: no step)."""
  if init_from.startswith(PRETRAINED):
    return models.pretrained(init_from.removeprefix(PRETRAINED)), None
  directory = pathlib.Path(init_from)
  step = _newest_step(directory)  # passed on, so the console line names the step loaded
  return models.load(directory, step=step), step


def _num_classes(model: nnx.Module) -> int:
  return dict(model.config.kwargs)["num_classes"]


def _shapes(model: nnx.Module, kept) -> dict[str, tuple[int, ...]]:
  return {".".join(map(str, path)): tuple(variable.shape)
          for path, variable in nnx.to_flat_state(nnx.state(model, nnx.All(CARRIED, kept)))}


def _mismatches(loaded: nnx.Module, model: nnx.Module, kept) -> list[str]:
  """'path: init_from's shape vs the config's' for every kept variable the two do not share."""
  old, new = _shapes(loaded, kept), _shapes(model, kept)
  return [f"{path} {old.get(path, 'absent')} vs {new.get(path, 'absent')}"
          for path in sorted(old.keys() | new.keys()) if old.get(path) != new.get(path)]


def _data_description(config: ConfigDict, num_classes: int) -> str:
  classes = f" (config.classes={tuple(config.classes)})" if config.classes else ""
  return (f"config.dataset={config.dataset}{classes} has {num_classes} "
          f"class{'' if num_classes == 1 else 'es'}")


def _check_finetune(config: ConfigDict) -> None:
  """`config.finetune` names a known mode, and changes something only when fine-tuning."""
  finetune = config.finetune
  if finetune.mode not in MODES:
    raise UserError(f"unknown config.finetune.mode {finetune.mode!r}; known: {', '.join(MODES)}")
  if finetune.backbone_lr_factor < 0:
    raise UserError(f"config.finetune.backbone_lr_factor={finetune.backbone_lr_factor}: a "
                    "learning-rate factor is >= 0 (0: the backbone's parameters stay)")
  if finetune.mode == "linear_probe" and finetune.backbone_lr_factor != 1:
    raise UserError("config.finetune.backbone_lr_factor applies to mode=full; a linear probe "
                    "never trains the backbone: leave the factor at 1")
  changed = finetune.new_head or finetune.mode != "full" or finetune.backbone_lr_factor != 1
  if changed and config.init_from is None:
    raise UserError("config.finetune says how to fine-tune config.init_from's model, and "
                    "config.init_from is not set: set it (a saved model, a training workdir, "
                    "or pretrained:NAME such as pretrained:resnet50)")


def _new_head_options(name: str, options: dict, num_classes: int) -> dict:
  """The builder arguments of a head for `num_classes`, its logit bias as its family's recipe.

  A bias of None (the v2 families) stays None: the model computes -log(C - 1) from the new
  `num_classes`. 0 stays 0 (the conventional baselines, trained without a prior). Any other
  explicit bias (the v1 families: log(0.1/0.9) for CIFAR-10's ten classes, log(0.01/0.99)
  for ImageNet) becomes the uniform prior of the new classes, -log(C - 1), which is what
  the v1 CIFAR-10 bias is for ten; the ImageNet v1 value, a fixed 1% prior, is not kept.
  """
  bias = dict(models.config_for(name, **options).kwargs)["logit_bias"]
  head = {"num_classes": num_classes}
  if bias is not None and bias != 0:
    head["logit_bias"] = uniform_prior_bias(num_classes)
  return head


def _execution_options(config: ConfigDict) -> dict:
  """Builder arguments that change how the model runs, not what it computes: `remat`."""
  if "remat" in config.model.overrides:
    raise UserError("config.model.overrides.remat: set config.remat instead (the trainer "
                    "builds the model with it)")
  if not config.remat:
    return {}
  name = config.model.name
  if name:
    try:
      models.config_for(name, remat=True)
    except UserError:
      raise UserError(f"config.remat=True: {name} has no blocks to recompute (the DenseNet, "
                      "ResNet, ConvNeXt and ViT families have); set config.remat=False"
                      ) from None
  return {"remat": True}


def initial_model(config: ConfigDict, num_classes: int) -> tuple[nnx.Module, str | None]:
  """The model a run of `config` starts from, initialised with `nnx.Rngs(config.seed)`.

  Args:
    config: a complete training config (`config_schema.complete`).
    num_classes: the number of classes of the run's data set (after `config.classes`).

  Returns:
    The model and, when its variables come from `config.init_from`, the console line
    that says from where.

  Raises:
    UserError: an unknown model or option, a `config.init_from` that holds no model
      (`ModelNotFoundError`) or names no released weights, one whose model `config.model`
      does not name, a model with another number of classes than the data set (without
      `config.finetune.new_head`), a data set of fewer than 2 classes, or a `config.finetune`
      without `config.init_from`.
  """
  _check_finetune(config)
  if num_classes < 2:
    raise UserError(f"{_data_description(config, num_classes)}: a classifier needs at least "
                    "2; choose a data set (or config.classes) with more")
  rngs = nnx.Rngs(config.seed)
  execution = _execution_options(config)
  if config.init_from is None:
    if config.model.name and models.info(config.model.name).family.converted:
      raise UserError(f"{config.model.name} is made by converting a trained network, not "
                       "trained from a random initialisation: convert one (python -m "
                       "bcos_jax.convert --bcosify --torch_checkpoint FILE.pth --out DIR) and "
                       "set config.init_from=DIR")
    model = models.create(config.model.name, rngs=rngs, **config.model.overrides, **execution)
    if _num_classes(model) != num_classes:
      raise UserError(f"config.model makes a {_describe(model.config)} with "
                      f"{_num_classes(model)} classes, and {_data_description(config, num_classes)}"
                      f": set config.model.overrides.num_classes={num_classes}")
    return model, None
  loaded, step = _open(config.init_from)
  source = loaded.config
  holds = f"config.init_from={config.init_from} holds a {_describe(source)}"
  if config.model.name and config.model.name != source.name:
    raise UserError(f"{holds}, but config.model.name is {config.model.name}: fine-tuning "
                    f"needs init_from's architecture; set config.model.name={source.name} or "
                    "leave it empty")
  given = {} if config.model.name else dict(source.kwargs)
  new_head = config.finetune.new_head
  head = _new_head_options(source.name, given, num_classes) if new_head else {}
  model = models.create(source.name, rngs=rngs,
                        **{**given, **head, **config.model.overrides, **execution})
  heads = train_state.head_attributes(model) if new_head else ()
  kept = nnx.Not(lambda path, _: path[0] in heads)  # the variables taken from init_from
  mismatches = _mismatches(loaded, model, kept)
  if mismatches:
    more = len(mismatches) - MAX_LISTED
    listed = ", ".join(mismatches[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
    raise UserError(
        f"{holds}, but config.model makes a {_describe(model.config)}, whose variables have "
        f"other shapes (init_from's vs the config's): {listed}; set config.model.overrides "
        "as init_from's, or leave config.model.name empty and drop the overrides that change "
        "shapes")
  if _num_classes(model) != num_classes:
    raise UserError(f"{holds} with {_num_classes(model)} classes, and "
                    f"{_data_description(config, num_classes)}: set "
                    "config.finetune.new_head=True to train a new head for them "
                    "(configs/finetune.py does)")
  nnx.update(model, nnx.state(loaded, nnx.All(CARRIED, kept)))
  at = "" if step is None else f", step {step}"
  line = f"initialised from {config.init_from} ({source.name}{at})"
  if new_head:
    line += (f"; a new head for {num_classes} classes (logit bias "
             f"{model.logit_layer.bias:.4g})")
  return model, line
