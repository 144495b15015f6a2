"""What the benchmark scripts share: medians after a warm-up, and bcos_jax's timed functions.

Each timed function takes no argument and returns what it computed, already
finished (JAX results are blocked on), so a caller times it with `median_ms`.
"""

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bcos_jax import explain, models, sharding
from bcos_jax.train import state as train_state
from bcos_jax.train import steps


def median_ms(fn: Callable[[], object], count: int, warmup: int = 1) -> float:
  """The median wall time of `count` calls of `fn`, in ms, after `warmup` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(count):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def _finished(fn: Callable[[], object]) -> Callable[[], object]:
  return lambda: jax.block_until_ready(fn())


def bcos_jax_functions(model: nnx.Module, images_uint8: jax.Array, labels: jax.Array,
                       compute_dtype: str = "float32") -> dict[str, Callable[[], object]]:
  """bcos_jax's timed functions for `model` on one batch.

  Returns:
    "forward": the evaluation-mode logits of the batch;
    "explain": W(x) of every image's top class, for the whole batch (`explain.explain`);
    "explain_one": what the official `model.explain(img)` returns for the first image:
      its W(x), contribution map and colour explanation (`explain.explain` on a batch
      of one, then `explain.to_rgba`);
    "train_step": one training step (forward, BCE, backward, Adam update) on one device;
    "flops": a function of "forward", "explain" or "train_step" returning XLA's
      FLOP count of that computation (compiled when asked: only what is reported).
  """
  # Evaluation gets its own copy of the variables: the train step donates (deletes)
  # the buffers of its state, which `nnx.split` would otherwise share with it.
  eval_model = models.eval_mode(model)
  eval_graphdef, eval_state = nnx.split(eval_model)
  eval_state = jax.tree.map(jnp.copy, eval_state)
  eval_model = nnx.merge(eval_graphdef, eval_state)
  encode = models.input_transform(model)
  forward = jax.jit(lambda s, x: nnx.merge(eval_graphdef, s)(encode(x)))
  explained = jax.jit(lambda s, x: explain.explain(nnx.merge(eval_graphdef, s),
                                                   encode(x)).weights)
  x6_one = jax.jit(encode)(images_uint8[:1])

  def explain_one():
    e = explain.explain(eval_model, x6_one)
    return e.weights, e.contributions, explain.to_rgba(x6_one, e.weights)

  mesh = sharding.make_mesh(1)
  optimizer = optax.adam(1e-3)
  graphdef, state = train_state.create(model, optimizer)
  holder = {"state": sharding.place_state(state, mesh)}
  train_step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-3), mesh,
                                     holder["state"],
                                     steps.StepOptions(compute_dtype=compute_dtype))
  batch = sharding.shard_batch({"image": images_uint8, "label": labels}, mesh)

  def train():
    holder["state"], metrics = train_step(holder["state"], batch)
    return metrics

  timed = {"forward": _finished(lambda: forward(eval_state, images_uint8)),
           "explain": _finished(lambda: explained(eval_state, images_uint8)),
           "explain_one": _finished(explain_one),
           "train_step": _finished(train)}
  # XLA's count of each compiled computation's floating-point operations (for MFU).
  # (The train state is read when asked: each step donates the one before.)
  computations = {"forward": lambda: (forward, eval_state, images_uint8),
                  "explain": lambda: (explained, eval_state, images_uint8),
                  "train_step": lambda: (train_step, holder["state"], batch)}
  timed["flops"] = lambda name: compiled_flops(*computations[name]())
  return timed


def compiled_flops(jitted: Callable, *args) -> float | None:
  """The FLOPs XLA counts in `jitted`'s computation for `args` (None where it counts none)."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  flops = (analysis or {}).get("flops")
  return float(flops) if flops else None


def random_batch(batch_size: int, image_size: int, num_classes: int,
                 seed: int = 0) -> tuple[jax.Array, jax.Array]:
  """uint8 (B, S, S, 3) images and int32 labels, the same for every script and run."""
  images = jax.random.randint(jax.random.key(seed), (batch_size, image_size, image_size, 3), 0,
                              256).astype(jnp.uint8)
  return images, jnp.arange(batch_size) % num_classes
