"""Orbax checkpoints of the train state, the data iterator and the model config.

A checkpoint is self-describing: `config` holds the model's registry name and
builder arguments (layer scales, logit temperature and bias), so
`bcos_jax.models` can rebuild the model without the training config.
"""

import pathlib

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx

from bcos_jax.models import registry, saving
from bcos_jax.train.state import TrainState, split_model


class CheckpointMismatchError(ValueError):
  """A workdir's checkpoint does not fit the train state of the config given."""


def manager(workdir: str | pathlib.Path, max_to_keep: int = 3,
            asynchronous: bool = True) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      pathlib.Path(workdir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=asynchronous),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def save(mgr: ocp.CheckpointManager, step: int, state: TrainState, data_iterator,
         config: dict) -> None:
  """Saves (asynchronously: call `mgr.wait_until_finished()` before exiting)."""
  mgr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(data_iterator),
      config=ocp.args.JsonSave(config)), force=True)


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: TrainState,
                   data_iterator) -> TrainState | None:
  """Restores the newest checkpoint into `data_iterator`; None when there is none."""
  step = mgr.latest_step()
  if step is None:
    return None
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
  except ValueError as error:
    if "do not match" not in str(error):
      raise
    raise CheckpointMismatchError(
        f"the checkpoint of step {step} in {mgr.directory} does not fit this config's train "
        "state (another model, optimiser, EMA or gradient-accumulation setting, or an older "
        "bcos_jax): resume with the config it was written with, or use a new workdir"
    ) from error
  return restored["state"]


def _pure(tree):
  """A restored nnx.State (variables stored as {'value': array}, list indices as
  strings) as the pure dict `nnx.replace_by_pure_dict` takes."""
  if not isinstance(tree, dict):
    return tree
  if tree.keys() == {"value"}:
    return tree["value"]
  return {int(k) if isinstance(k, str) and k.isdigit() else k: _pure(v) for k, v in tree.items()}


def restore_model(workdir: str | pathlib.Path, step: int | None = None) -> nnx.Module:
  """The model of a training run's checkpoint (the newest, or `step`), in evaluation mode.

  The checkpoint's `config` item rebuilds the architecture, so neither the
  training config nor the optimiser is needed.

  Raises:
    FileNotFoundError: when `workdir` holds no checkpoint.
  """
  mgr = manager(workdir, asynchronous=False)
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{pathlib.Path(workdir).absolute() / 'checkpoints'} holds no "
                            "checkpoint; train with python -m bcos_jax.main first")
  config = dict(mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
  name = config.pop("name")
  abstract = nnx.eval_shape(lambda: registry.create(name, rngs=nnx.Rngs(0),
                                                    **saving.tuples(config)))
  graphdef, params, rest = split_model(abstract)
  # Onto this process's first device, whatever the topology the run was saved on
  # (e.g. trained on 8 accelerators, evaluated on one).
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  stored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(fallback_sharding=here)))["state"]
  nnx.replace_by_pure_dict(params, _pure(stored["params"]))
  nnx.replace_by_pure_dict(rest, _pure(stored["model_state"]))
  mgr.close()
  model = nnx.merge(graphdef, params, rest)
  return nnx.view(model, use_running_average=True, deterministic=True, raise_if_not_found=False)
