"""Orbax checkpoints of the train state, the data iterator and the model config.

A checkpoint is self-describing: `config` holds the model's registry name and
builder arguments (layer scales, logit temperature and bias), so
`bcos_jax.models.load(workdir)` rebuilds the model without the training
config. The layout (folder and item names) is `bcos_jax.models.saving`'s.
"""

import pathlib

import grain
import orbax.checkpoint as ocp

from bcos_jax.models.saving import CHECKPOINTS_DIR, CONFIG_ITEM, DATA_ITEM, STATE_ITEM
from bcos_jax.train.state import TrainState


class CheckpointMismatchError(ValueError):
  """A workdir's checkpoint does not fit the train state of the config given."""


def manager(workdir: str | pathlib.Path, max_to_keep: int = 3,
            asynchronous: bool = True) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      pathlib.Path(workdir).absolute() / CHECKPOINTS_DIR,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=asynchronous),
      item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(),
                     DATA_ITEM: grain.checkpoint.CheckpointHandler(),
                     CONFIG_ITEM: ocp.JsonCheckpointHandler()})


def save(mgr: ocp.CheckpointManager, step: int, state: TrainState, data_iterator,
         config: dict) -> None:
  """Saves (asynchronously: call `mgr.wait_until_finished()` before exiting)."""
  mgr.save(step, args=ocp.args.Composite(**{
      STATE_ITEM: ocp.args.StandardSave(state),
      DATA_ITEM: grain.checkpoint.CheckpointSave(data_iterator),
      CONFIG_ITEM: ocp.args.JsonSave(config)}), force=True)


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: TrainState,
                   data_iterator) -> TrainState | None:
  """Restores the newest checkpoint into `data_iterator`; None when there is none."""
  step = mgr.latest_step()
  if step is None:
    return None
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_state),
        DATA_ITEM: grain.checkpoint.CheckpointRestore(data_iterator)}))
  except ValueError as error:
    if "do not match" not in str(error):
      raise
    raise CheckpointMismatchError(
        f"the checkpoint of step {step} in {mgr.directory} does not fit this config's train "
        "state (another model, optimiser, EMA or gradient-accumulation setting, or an older "
        "bcos_jax): resume with the config it was written with, or use a new workdir"
    ) from error
  return restored[STATE_ITEM]
