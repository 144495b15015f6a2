"""The sharded train and eval steps: EMA, accumulation, stochastic depth, tracing."""

import chex
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from bcos_jax import models, sharding
from bcos_jax.evaluate import accuracy
from bcos_jax.train import state as train_state
from bcos_jax.train import steps

TINY_CIFAR = dict(widths=(4,) * 8)


def _batches(count: int, size: int = 16, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{"image": rng.integers(0, 256, (size, 32, 32, 3)).astype(np.uint8),
           "label": (np.arange(size) % 10).astype(np.int32)} for _ in range(count)]


def _run(accumulate_steps: int, decay: float, batches: list[dict]):
  """Trains on `batches`; returns the parameters after every step and the final state."""
  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), **TINY_CIFAR)
  optimizer = optax.adam(1e-2)
  if accumulate_steps > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=accumulate_steps)
  graphdef, state = train_state.create(model, optimizer, ema=True)
  mesh = sharding.make_mesh()
  state = sharding.place_state(state, mesh)
  options = steps.StepOptions(ema_decay=decay, accumulate_steps=accumulate_steps)
  step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-2), mesh, state,
                               options)
  history = [jax.device_get(state.params)]
  for batch in batches:
    state, _ = step(state, sharding.shard_batch(batch, mesh))
    history.append(jax.device_get(state.params))
  return history, state


@pytest.mark.parametrize("accumulate_steps", [1, 2])
def test_ema_is_the_hand_computed_average_of_the_updates(accumulate_steps):
  """ema <- d·ema + (1 - d)·params once per optimiser update (every k-th step when
  accumulating k batches), starting from the initial parameters."""
  decay = 0.7
  history, state = _run(accumulate_steps, decay, _batches(4))
  expected = history[0]
  for index in range(1, len(history)):
    if index % accumulate_steps == 0:  # an optimiser update happened at this step
      expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, expected,
                              history[index])
    elif accumulate_steps > 1:  # a micro-step: the parameters do not move
      chex.assert_trees_all_close(history[index], history[index - 1])
  chex.assert_trees_all_close(jax.device_get(state.ema_params), expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(history[-1]["head"]["kernel"]),
                         np.asarray(history[0]["head"]["kernel"]))


def test_stochastic_depth_trains_through_the_sharded_step_with_the_default_prng():
  """The drop masks' stream lives in the train state: sharded, advanced every step, and
  the masks differ between steps; with JAX's default (partitionable) threefry."""
  with jax.threefry_partitionable(True):
    model = models.create("resnet18", rngs=nnx.Rngs(0), stem_width=8, layers=(1, 1),
                          num_classes=10, stochastic_depth_prob=0.9)
    optimizer = optax.sgd(0.0)  # parameters fixed: only the masks change the loss
    graphdef, state = train_state.create(model, optimizer)
    mesh = sharding.make_mesh(8, fsdp=2)
    state = sharding.place_state(state, mesh)
    step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(0.0), mesh, state,
                                 trace_check=chex.assert_max_traces(n=1))
    counts = lambda s: [int(v[...]) for path, v in nnx.to_flat_state(s.model_state)  # noqa: E731
                        if path[-1] == "count"]
    start = counts(state)
    assert start, "no random-number stream in the train state"
    batch = sharding.shard_batch(_batches(1)[0], mesh)
    losses = []
    for _ in range(4):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    assert counts(state) == [c + 4 for c in start]
    assert np.all(np.isfinite(losses)) and len(set(losses)) > 1  # new masks every step
    kernel = state.params["stages"][1][0]["conv1"]["conv"]["kernel"][...]
    assert not kernel.sharding.is_fully_replicated  # fsdp=2 shards the parameters


def test_eval_step_traces_once_and_matches_the_model():
  chex.clear_trace_counter()
  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), **TINY_CIFAR)
  mesh = sharding.make_mesh()
  graphdef, params, rest = train_state.split_model(model)
  variables = sharding.place_state((params, rest), mesh)
  step = accuracy.make_eval_step(graphdef, variables, mesh,
                                 trace_check=chex.assert_max_traces(n=1))
  for batch in _batches(3):
    batch["mask"] = np.ones(16, bool)
    out = step(variables, sharding.shard_batch(batch, mesh))
  logits = model(models.input_transform(model)(batch["image"]))
  chex.assert_trees_all_close(out["top_logit"], logits.max(-1), rtol=1e-5)
  np.testing.assert_array_equal(out["predicted"], np.asarray(logits.argmax(-1)))
  assert step._cache_size() == 1


def test_step_options_read_the_config():
  from bcos_jax.train import config_schema

  config = config_schema.defaults()
  config.loss.aux_weight, config.accumulate_steps, config.ema_decay = 0.4, 2, 0.9
  options = steps.StepOptions.from_config(config)
  assert (options.aux_weight, options.accumulate_steps, options.ema_decay) == (0.4, 2, 0.9)
  assert options.loss == "bce" and options.compute_dtype == "float32"
