"""Jitted, sharded train and eval steps over a `jax.make_mesh` mesh with a "data" axis."""

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


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over (the first `num_devices` of) all devices, axis "data"."""
  count = num_devices or jax.device_count()
  return jax.make_mesh((count,), ("data",), devices=jax.devices()[:count])


def check_batch_divides(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise ValueError(
        f"the global batch size {global_batch_size} does not divide over the {devices} "
        f"devices of the mesh: use a multiple of {devices} (e.g. "
        f"{(global_batch_size // devices + 1) * devices}), or fewer devices")


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's part of the global batch -> global arrays split over "data"."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _metrics(logits, labels, loss) -> dict[str, jax.Array]:
  top5 = min(5, logits.shape[-1])
  return {"loss": loss, "top1": losses.topk_correct(logits, labels, 1).mean(),
          "top5": losses.topk_correct(logits, labels, top5).mean()}


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: jax.sharding.Mesh, state: TrainState,
                    trace_check: Callable[[Callable], Callable] = lambda f: f,
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """A jitted step: forward, BCE, backward, Adam; the state is donated.

  Args:
    graphdef, optimizer, schedule: what the step closes over.
    mesh: the device mesh; the batch is split over "data", the state replicated.
    state: an example state (for its structure).
    trace_check: wraps the step before jit, e.g. `chex.assert_max_traces(n=1)`
      in tests (the loop checks the compilation cache instead).
  """

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    x6 = to_model_input(batch["image"])

    def loss_fn(params):
      # copy=True: fresh variables in this trace, so norm layers may update
      # their statistics here (the state's own variables belong to the outer trace).
      model = nnx.merge(graphdef, params, state.model_state, copy=True)
      logits = model(x6)
      targets = batch.get("target")
      if targets is None:
        targets = losses.targets_from_labels(batch["label"], logits.shape[-1])
      _, _, model_state = split_model(model)  # e.g. updated BatchNorm statistics
      return losses.bce(logits, targets), (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                           opt_state=opt_state)
    metrics = _metrics(logits, batch["label"], loss)
    metrics["learning_rate"] = schedule(state.step)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return new_state, metrics

  replicated = NamedSharding(mesh, P())
  state_sharding = jax.tree.map(lambda _: replicated, state)
  return jax.jit(trace_check(step),
                 in_shardings=(state_sharding, NamedSharding(mesh, P("data"))),
                 out_shardings=(state_sharding, replicated), donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, state: TrainState
                   ) -> Callable[[TrainState, dict], dict]:
  """A jitted step that returns masked sums (loss, top-1, top-5 correct, count)."""

  def step(state: TrainState, batch: dict) -> dict:
    model = nnx.view(model_of(graphdef, state), use_running_average=True, deterministic=True,
                     raise_if_not_found=False)
    logits = model(to_model_input(batch["image"]))
    mask = batch["mask"].astype(jnp.float32)
    targets = losses.targets_from_labels(batch["label"], logits.shape[-1])
    per_example = losses.bce_per_example(logits, targets)
    top5 = min(5, logits.shape[-1])
    return {"loss": jnp.sum(per_example * mask),
            "top1": jnp.sum(losses.topk_correct(logits, batch["label"], 1) * mask),
            "top5": jnp.sum(losses.topk_correct(logits, batch["label"], top5) * mask),
            "count": jnp.sum(mask)}

  replicated = NamedSharding(mesh, P())
  state_sharding = jax.tree.map(lambda _: replicated, state)
  return jax.jit(step, in_shardings=(state_sharding, NamedSharding(mesh, P("data"))),
                 out_shardings=replicated)


def replicate(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
  return jax.device_put(state, NamedSharding(mesh, P()))

