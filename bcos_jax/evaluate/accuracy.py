"""Accuracy over a whole split: one sharded evaluation, for training and for the tools.

`make_eval_step` jits the model (in evaluation mode, on its own input
encoding) over a batch split across the mesh and returns per-example
outputs, replicated; `evaluate` runs it over every record of a split once
(padded batches, masked) and returns the per-example results, from which
the training loop reads its metrics and the localisation command its
confident images.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bcos_jax import data, models, sharding

# (logits (N, C), labels (N,)) -> (N,) per-example loss.
PerExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]
EvalStep = Callable[[tuple, dict], dict]


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(N,) 1.0 where the label is among the k largest logits."""
  top = jax.lax.top_k(logits, k)[1]
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _per_example(logits: jax.Array, labels: jax.Array,
                 loss: PerExampleLoss | None) -> dict[str, jax.Array]:
  outputs = {"label": labels, "top_logit": logits.max(axis=-1), "predicted": logits.argmax(-1),
             "top1": topk_correct(logits, labels, 1),
             "top5": topk_correct(logits, labels, min(5, logits.shape[-1]))}
  if loss is not None:
    outputs["loss"] = loss(logits, labels)
  return outputs


def make_eval_step(graphdef: nnx.GraphDef, variables: tuple, mesh: jax.sharding.Mesh,
                   loss: PerExampleLoss | None = None,
                   trace_check: Callable[[Callable], Callable] = lambda f: f) -> EvalStep:
  """A jitted step: a batch split over the mesh -> per-example outputs, replicated.

  Args:
    graphdef: of a model built by `bcos_jax.models.create`.
    variables: the states merged with it (`nnx.merge(graphdef, *variables)`), e.g.
      (params, other variables) of a train state, for their structure and sharding.
    mesh: the device mesh.
    loss: a per-example loss to report too (training passes its BCE); None: none.
    trace_check: wraps the step before jit, e.g. `chex.assert_max_traces(n=1)` in tests.

  Returns:
    step(variables, batch) -> {"label", "mask", "top_logit", "predicted", "top1",
    "top5"[, "loss"]}, each (global batch,).
  """

  def step(variables: tuple, batch: dict) -> dict:
    model = models.eval_mode(nnx.merge(graphdef, *variables))
    logits = model(models.input_transform(model)(batch["image"])).astype(jnp.float32)
    return {**_per_example(logits, batch["label"], loss), "mask": batch["mask"]}

  return jax.jit(trace_check(step), in_shardings=(sharding.state_sharding(variables, mesh),
                                     sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


@dataclasses.dataclass(frozen=True)
class SplitResults:
  """Per-example results over a split, in record order (for any number of processes),
  padding dropped."""
  label: np.ndarray
  top_logit: np.ndarray
  predicted: np.ndarray
  top1: np.ndarray
  top5: np.ndarray
  loss: np.ndarray | None = None  # when the step was given a loss

  @property
  def correct(self) -> np.ndarray:
    return self.top1.astype(bool)

  def metrics(self, prefix: str = "eval/") -> dict[str, float]:
    """Top-1 and top-5 accuracy, the record count and (if computed) the mean loss."""
    metrics = {f"{prefix}top1": float(self.top1.mean()), f"{prefix}top5": float(self.top5.mean()),
               f"{prefix}count": float(len(self.label))}
    if self.loss is not None:
      metrics[f"{prefix}loss"] = float(self.loss.mean())
    return metrics


def evaluate(step: EvalStep, variables: tuple, source, transform, *, global_batch_size: int,
             mesh: jax.sharding.Mesh, worker_count: int = 0) -> SplitResults:
  """Runs `step` over every record of `source` once (all processes together).

  Each process reads its devices' rows of every global batch; the outputs are
  replicated, so every process gets the results of the whole split, in record order.

  Args:
    step: from `make_eval_step`.
    variables: the model's states, placed on the mesh.
    source: the split (`bcos_jax.data.Source`).
    transform: the recipe's evaluation transform.
    global_batch_size: over all processes; must divide over the mesh's devices.
    mesh: the device mesh.
    worker_count: grain worker processes.
  """
  sharding.check_batch_divides(global_batch_size, mesh)
  outputs = []
  for batch in data.eval_dataset(source, transform, global_batch_size=global_batch_size,
                                 rows=sharding.process_rows(mesh, global_batch_size),
                                 worker_count=worker_count):
    outputs.append(step(variables, sharding.shard_batch(batch, mesh)))
  outputs = jax.device_get(outputs)
  keep = np.concatenate([o["mask"] for o in outputs]).astype(bool)
  fields = [f.name for f in dataclasses.fields(SplitResults) if f.name in outputs[0]]
  return SplitResults(**{k: np.concatenate([o[k] for o in outputs])[keep] for k in fields})


def classify(model: nnx.Module, source, transform, batch_size: int = 64,
             mesh: jax.sharding.Mesh | None = None) -> SplitResults:
  """Per-example results of `model` (in evaluation mode) on every record of `source`.

  Args:
    batch_size: global; split over the mesh's devices (default: all devices).
  """
  mesh = mesh or sharding.make_mesh()
  graphdef, state = nnx.split(models.eval_mode(model))
  variables = sharding.place_state((state,), mesh)
  step = make_eval_step(graphdef, variables, mesh)
  return evaluate(step, variables, source, transform, global_batch_size=batch_size, mesh=mesh)
