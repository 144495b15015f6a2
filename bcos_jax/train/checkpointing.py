"""Orbax checkpoints of the train state and the model config.

The data position needs no item of its own: it is the step (`bcos_jax.data.
train_dataset(start_step=...)`), whatever the number of processes. Every process
saves and restores its own shards (orbax multi-host), into the shardings of the
restoring run's mesh, which may differ from the saving run's. A checkpoint is
self-describing: `config` holds the model's registry name and
builder arguments (layer scales, logit temperature and bias), so
`bcos_jax.models.load(workdir)` rebuilds the model without the training
config. The layout (folder and item names) is `bcos_jax.models.saving`'s.
"""

import pathlib

import orbax.checkpoint as ocp

from bcos_jax import console
from bcos_jax.errors import UserError
from bcos_jax.models.saving import CHECKPOINTS_DIR, CONFIG_ITEM, STATE_ITEM
from bcos_jax.train.state import TrainState


class CheckpointMismatchError(UserError):
  """A workdir's checkpoint does not fit the train state of the config given."""


def manager(workdir: str | pathlib.Path, max_to_keep: int = 3,
            asynchronous: bool = True) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      pathlib.Path(workdir).absolute() / CHECKPOINTS_DIR,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=asynchronous),
      item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(),
                     CONFIG_ITEM: ocp.JsonCheckpointHandler()})


def save(mgr: ocp.CheckpointManager, step: int, state: TrainState, config: dict) -> None:
  """Saves (asynchronously: call `mgr.wait_until_finished()` before exiting); every
  process calls it."""
  mgr.save(step, args=ocp.args.Composite(**{
      STATE_ITEM: ocp.args.StandardSave(state),
      CONFIG_ITEM: ocp.args.JsonSave(config)}), force=True)


class DamagedCheckpointError(UserError):
  """The only checkpoint there is cannot be read (truncated, half-copied, a full disk)."""


DAMAGED_DIR = "checkpoints_damaged"


def _restore(mgr: ocp.CheckpointManager, step: int, abstract_state: TrainState) -> TrainState:
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))
  except ValueError as error:
    if "do not match" not in str(error):
      raise
    raise CheckpointMismatchError(
        f"the checkpoint of step {step} in {mgr.directory} does not fit this config's train "
        "state (another model, optimiser, EMA or gradient-accumulation setting, or an older "
        "bcos_jax): resume with the config it was written with, or use a new workdir"
    ) from error
  return restored[STATE_ITEM]


def _move_aside(mgr: ocp.CheckpointManager, step: int) -> pathlib.Path:
  """Moves a damaged step out of the manager's folder (never deletes it)."""
  source = pathlib.Path(mgr.directory) / str(step)
  target = pathlib.Path(mgr.directory).parent / DAMAGED_DIR / str(step)
  suffix = 0
  while target.exists():  # damaged twice at the same step: keep both
    suffix += 1
    target = target.with_name(f"{step}.{suffix}")
  target.parent.mkdir(parents=True, exist_ok=True)
  source.rename(target)
  mgr.reload()
  return target


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: TrainState) -> TrainState | None:
  """The newest readable checkpoint, restored into `abstract_state`; None when there is none.

  `abstract_state` holds `jax.ShapeDtypeStruct`s with shardings
  (`train.state.create_sharded`): each device reads only its shards.

  A newest checkpoint that cannot be read (truncated or half-written files) while
  the one before it can is moved to WORKDIR/checkpoints_damaged/<step>, with a
  warning naming the step, and the run resumes from the older one. When the
  older one fails too, the problem is not damage to one checkpoint: the error
  is raised and nothing is moved.

  Raises:
    CheckpointMismatchError: the checkpoint belongs to another train state.
    DamagedCheckpointError: the only checkpoint cannot be read.
  """
  steps = sorted(mgr.all_steps(), reverse=True)
  if not steps:
    return None
  try:
    return _restore(mgr, steps[0], abstract_state)
  except CheckpointMismatchError:
    raise
  except Exception as error:  # noqa: BLE001  (what a damaged file raises varies by handler)
    detail = str(error).splitlines()[0][:120] if str(error) else ""
    damage = f"{type(error).__name__}: {detail}"
    if len(steps) == 1:
      raise DamagedCheckpointError(
          f"the only checkpoint, step {steps[0]} in {mgr.directory}, cannot be read ({damage}). "
          f"Move it away (e.g. to {pathlib.Path(mgr.directory).parent / DAMAGED_DIR}) to start "
          "the run again, or use a new workdir") from error
    older = _restore(mgr, steps[1], abstract_state)  # raises if it fails too
    aside = _move_aside(mgr, steps[0])
    console.say(f"warning: the checkpoint of step {steps[0]} is damaged ({damage}); it was "
                f"moved to {aside} and the run resumes from step {steps[1]}")
    return older
