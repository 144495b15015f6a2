"""Jitted, sharded train and eval steps over a `jax.make_mesh` mesh.

The mesh has two axes: "data" splits the batch; "fsdp" splits the batch too
and, in addition, every parameter (and its optimiser moments) along one of its
axes, so a model larger than one device's memory can train (fully sharded
data parallel). With fsdp = 1 the state is replicated.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bcos_jax.data import to_model_input
from bcos_jax.train import losses
from bcos_jax.train.state import TrainState, model_of, split_model

BATCH_AXES = ("data", "fsdp")


def make_mesh(num_devices: int | None = None, fsdp: int = 1) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over (the first `num_devices` of) all devices."""
  count = num_devices or jax.device_count()
  if fsdp < 1 or count % fsdp:
    raise ValueError(f"fsdp={fsdp} must divide the {count} devices; use one of "
                     f"{[d for d in range(1, count + 1) if count % d == 0]}")
  # Auto axes: the compiler propagates the parameter shardings through the
  # model (FSDP's all-gathers), as with jit's in/out shardings of old.
  return jax.make_mesh((count // fsdp, fsdp), BATCH_AXES, devices=jax.devices()[:count],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def check_batch_divides(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise ValueError(
        f"the global batch size {global_batch_size} does not divide over the {devices} "
        f"devices of the mesh: use a multiple of {devices} (e.g. "
        f"{(global_batch_size // devices + 1) * devices}), or fewer devices")


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's part of the global batch -> global arrays split over all devices."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _leaf_sharding(leaf, mesh: jax.sharding.Mesh) -> NamedSharding:
  """FSDP rule: shard the largest axis that the fsdp size divides; else replicate."""
  size = mesh.shape["fsdp"]
  shape = getattr(leaf, "shape", ())
  if size > 1:
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
      if shape[axis] % size == 0:
        spec = [None] * len(shape)
        spec[axis] = "fsdp"
        return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def state_sharding(state: TrainState, mesh: jax.sharding.Mesh):
  """The sharding of every leaf of the state (replicated unless the mesh has fsdp > 1)."""
  return jax.tree.map(lambda leaf: _leaf_sharding(leaf, mesh), state)


def place_state(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  return jax.device_put(state, state_sharding(state, mesh))


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What a training step does besides forward, loss, backward and update.

  Attributes:
    loss: a name in `losses.LOSSES`.
    aux_weight: weight of the auxiliary head's loss (Inception-v3); 0: none.
    compute_dtype: "float32" or "bfloat16" (parameters stay float32).
    ema_decay: per-step decay of the parameter average; None: none.
    accumulate_steps: batches per optimiser update (the optimiser is then an
      `optax.MultiSteps`), for a virtual batch of accumulate_steps × batch.
  """
  loss: str = "bce"
  aux_weight: float = 0.0
  compute_dtype: str = "float32"
  ema_decay: float | None = None
  accumulate_steps: int = 1


def _cast_floats(tree, dtype):
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)


def _metrics(logits, labels, loss) -> dict[str, jax.Array]:
  top5 = min(5, logits.shape[-1])
  return {"loss": loss, "top1": losses.topk_correct(logits, labels, 1).mean(),
          "top5": losses.topk_correct(logits, labels, top5).mean()}


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: jax.sharding.Mesh, state: TrainState,
                    options: StepOptions = StepOptions(),
                    trace_check: Callable[[Callable], Callable] = lambda f: f,
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """A jitted step: forward, loss, backward, optimiser update; the state is donated.

  Args:
    graphdef, optimizer, schedule: what the step closes over.
    mesh: the device mesh; the batch is split over all devices, the state
      placed by `state_sharding`.
    state: an example state (for its structure).
    options: loss, auxiliary loss, compute precision, EMA, accumulation.
    trace_check: wraps the step before jit, e.g. `chex.assert_max_traces(n=1)`
      in tests (the loop checks the compilation cache instead).
  """
  loss_of = losses.get_loss(options.loss)
  dtype = jnp.dtype(options.compute_dtype)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    x6 = to_model_input(batch["image"]).astype(dtype)

    def loss_fn(params):
      # copy=True: fresh variables in this trace, so norm layers may update
      # their statistics here (the state's own variables belong to the outer trace).
      model = nnx.merge(graphdef, _cast_floats(params, dtype), state.model_state, copy=True)
      if options.aux_weight:
        logits, aux_logits = model.logits_with_aux(x6)
      else:
        logits, aux_logits = model(x6), None
      logits = logits.astype(jnp.float32)
      targets = batch.get("target")
      if targets is None:
        targets = losses.targets_from_labels(batch["label"], logits.shape[-1])
      loss = loss_of(logits, targets)
      if aux_logits is not None:
        loss = loss + options.aux_weight * loss_of(aux_logits.astype(jnp.float32), targets)
      _, _, model_state = split_model(model)  # e.g. updated BatchNorm statistics
      # Statistics keep their dtype whatever the compute precision (no retracing).
      model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), model_state,
                                 state.model_state)
      return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if options.ema_decay is not None:
      ema_params = optax.incremental_update(params, ema_params, 1 - options.ema_decay)
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                           opt_state=opt_state, ema_params=ema_params)
    metrics = _metrics(logits, batch["label"], loss)
    metrics["learning_rate"] = schedule(state.step // options.accumulate_steps)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return new_state, metrics

  shardings = state_sharding(state, mesh)
  return jax.jit(trace_check(step), in_shardings=(shardings, batch_sharding(mesh)),
                 out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, state: TrainState,
                   ema: bool = False) -> Callable[[TrainState, dict], dict]:
  """A jitted step that returns masked sums (loss, top-1, top-5 correct, count).

  Args:
    ema: evaluate the parameter average instead of the parameters.
  """

  def step(state: TrainState, batch: dict) -> dict:
    model = nnx.view(model_of(graphdef, state, ema), use_running_average=True,
                     deterministic=True, raise_if_not_found=False)
    logits = model(to_model_input(batch["image"]))
    mask = batch["mask"].astype(jnp.float32)
    targets = losses.targets_from_labels(batch["label"], logits.shape[-1])
    per_example = losses.bce_per_example(logits, targets)
    top5 = min(5, logits.shape[-1])
    return {"loss": jnp.sum(per_example * mask),
            "top1": jnp.sum(losses.topk_correct(logits, batch["label"], 1) * mask),
            "top5": jnp.sum(losses.topk_correct(logits, batch["label"], top5) * mask),
            "count": jnp.sum(mask)}

  return jax.jit(step, in_shardings=(state_sharding(state, mesh), batch_sharding(mesh)),
                 out_shardings=NamedSharding(mesh, P()))
