"""Orbax checkpoints of the train state, the data iterator and the model config.

A checkpoint is self-describing: `config` holds the model's registry name and
builder arguments (layer scales, logit temperature and bias), so
`bcos_jax.models` can rebuild the model without the training config.
"""

import pathlib

import grain
import orbax.checkpoint as ocp

from bcos_jax.train.state import TrainState


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
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return restored["state"]
