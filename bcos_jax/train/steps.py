"""The jitted, sharded train step over a `jax.make_mesh` mesh (`bcos_jax.sharding`).

The batch is split over every device; the state is replicated, or with
fsdp > 1 every parameter and its optimiser moments are sharded too. The
evaluation step is `bcos_jax.evaluate.accuracy.make_eval_step`.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from ml_collections import ConfigDict

from bcos_jax import models, sharding
from bcos_jax.evaluate.accuracy import topk_correct
from bcos_jax.train import losses
from bcos_jax.train.state import HEAD, TrainState, param_labels, split_model


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What a training step does besides forward, loss, backward and update.

  Attributes:
    loss: a name in `losses.LOSSES`.
    aux_weight: weight of the auxiliary head's loss (Inception-v3); 0: none.
    compute_dtype: "float32" or "bfloat16" (parameters stay float32).
    ema_decay: decay of the parameter average per optimiser update; None: none.
    accumulate_steps: batches per optimiser update (the optimiser is then an
      `optax.MultiSteps`), for a virtual batch of accumulate_steps × batch.
    linear_probe: only the head learns (`train.state.param_labels`): the model runs as in
      evaluation (`models.eval_mode`: norm layers use and keep their running statistics,
      stochastic depth keeps every branch) and no gradient flows into the backbone, so
      its variables stay as they were (the optimiser gives them zero updates).
  """
  loss: str = "bce"
  aux_weight: float = 0.0
  compute_dtype: str = "float32"
  ema_decay: float | None = None
  accumulate_steps: int = 1
  linear_probe: bool = False

  @classmethod
  def from_config(cls, config: ConfigDict) -> "StepOptions":
    """The options of a training config (every field is in `config_schema.defaults()`)."""
    return cls(loss=config.loss.name, aux_weight=config.loss.aux_weight,
               compute_dtype=config.compute_dtype, ema_decay=config.ema_decay,
               accumulate_steps=config.accumulate_steps,
               linear_probe=config.finetune.mode == "linear_probe")


def _cast_floats(tree, dtype):
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)


def _metrics(logits, labels, loss) -> dict[str, jax.Array]:
  top5 = min(5, logits.shape[-1])
  return {"loss": loss, "top1": topk_correct(logits, labels, 1).mean(),
          "top5": topk_correct(logits, labels, top5).mean()}


def updated_ema(ema_params, params, opt_state, options: StepOptions):
  """The parameter average after this step: moved towards `params` once per optimiser update.

  With accumulation (`optax.MultiSteps`) the parameters change only on the
  step that completes a virtual batch (its mini-step counter wraps to 0), so
  the average moves only then and `ema_decay` keeps its per-update meaning.
  """
  if options.ema_decay is None:
    return ema_params
  # old + (1 - d)·(new - old), not d·old + (1 - d)·new: an average of a parameter that does
  # not move (a linear probe's backbone) stays bit for bit.
  moved = jax.tree.map(lambda new, old: old + (1 - options.ema_decay) * (new - old), params,
                       ema_params)
  if options.accumulate_steps == 1:
    return moved
  applied = opt_state.mini_step == 0
  return jax.tree.map(lambda new, old: jnp.where(applied, new, old), moved, ema_params)


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: jax.sharding.Mesh, state: TrainState,
                    options: StepOptions = StepOptions(),
                    trace_check: Callable[[Callable], Callable] = lambda f: f,
                    device_transform: Callable[[dict], dict] | None = None,
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """A jitted step: forward, loss, backward, optimiser update; the state is donated.

  Args:
    graphdef, optimizer, schedule: what the step closes over; the graphdef is of a
      model built by `bcos_jax.models.create`, whose input transform the step applies.
    mesh: the device mesh; the batch is split over all devices, the state
      placed by `sharding.state_sharding`.
    state: an example state (for its structure).
    options: loss, auxiliary loss, compute precision, EMA, accumulation, linear probing.
    trace_check: wraps the step before jit, e.g. `chex.assert_max_traces(n=1)`
      in tests (the loop checks the compilation cache instead).
    device_transform: the recipe's part that runs on the device, batch -> batch, before
      the model (`bcos_jax.data.train_transforms`); None: none.
  """
  loss_of = losses.get_loss(options.loss)
  dtype = jnp.dtype(options.compute_dtype)
  labels = (param_labels(nnx.merge(graphdef, state.params, state.model_state))
            if options.linear_probe else None)

  def trained(params):
    """The parameters; in a linear probe the backbone's are cut off from the gradient
    (its backward pass is then never computed)."""
    if labels is None:
      return params
    return jax.tree.map(lambda p, label: p if label == HEAD else jax.lax.stop_gradient(p),
                        params, labels)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    if device_transform is not None:
      batch = device_transform(batch)

    def loss_fn(params):
      # copy=True: fresh variables in this trace, so norm layers may update
      # their statistics here (the state's own variables belong to the outer trace).
      model = nnx.merge(graphdef, _cast_floats(trained(params), dtype), state.model_state,
                        copy=True)
      if options.linear_probe:
        model = models.eval_mode(model)
      x = models.input_transform(model)(batch["image"]).astype(dtype)
      if options.aux_weight:
        logits, aux_logits = model.logits_with_aux(x)
      else:
        logits, aux_logits = model(x), None
      logits = logits.astype(jnp.float32)
      targets = batch.get("target")
      if targets is None:
        targets = losses.targets_from_labels(batch["label"], logits.shape[-1])
      loss = loss_of(logits, targets)
      if aux_logits is not None:
        loss = loss + options.aux_weight * loss_of(aux_logits.astype(jnp.float32), targets)
      # Updated BatchNorm statistics and the stochastic-depth stream's counter.
      _, _, model_state = split_model(model)
      # Statistics keep their dtype whatever the compute precision (no retracing).
      model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), model_state,
                                 state.model_state)
      return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                           opt_state=opt_state,
                           ema_params=updated_ema(state.ema_params, params, opt_state, options))
    metrics = _metrics(logits, batch["label"], loss)
    metrics["learning_rate"] = schedule(state.step // options.accumulate_steps)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return new_state, metrics

  shardings = sharding.state_sharding(state, mesh)
  return jax.jit(trace_check(step), in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
