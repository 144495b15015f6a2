"""config.finetune: a linear probe trains the head alone; full fine-tuning scales the backbone."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from bcos_jax import models, sharding
from bcos_jax.errors import UserError
from bcos_jax.train import config_schema, init_from, loop, steps
from bcos_jax.train import state as train_state

# BatchNorm everywhere, so a probe that updated running statistics would show.
TINY_RESNET = {"layers": (1, 1), "stem_width": 8, "num_classes": 5}
LEARNING_RATE = 1e-2


def _batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
          "label": (np.arange(8) % 5).astype(np.int32)}


def _config(**finetune):
  config = config_schema.defaults()
  config.finetune.update(finetune)
  return config


def _train(steps_taken: int = 2, ema_decay: float | None = None, **finetune
           ) -> tuple[dict, dict]:
  """The variables before and after `steps_taken` steps of fine-tuning (flat, NumPy)."""
  config = _config(**finetune)
  config.ema_decay = ema_decay
  model = models.create("resnet18", rngs=nnx.Rngs(0), **TINY_RESNET)
  schedule = optax.constant_schedule(LEARNING_RATE)
  optimizer = loop._optimizer(config, schedule, param_labels=train_state.param_labels(model))
  graphdef, state = train_state.create(model, optimizer, ema=ema_decay is not None)
  mesh = sharding.make_mesh(1)
  state = sharding.place_state(state, mesh)
  step = steps.make_train_step(graphdef, optimizer, schedule, mesh, state,
                               steps.StepOptions.from_config(config))
  before = _flat(state)
  for index in range(steps_taken):
    state, metrics = step(state, sharding.shard_batch(_batch(index), mesh))
    assert np.isfinite(float(metrics["loss"]))
  return before, _flat(state)


def _flat(state) -> dict:
  """Every variable by path; the parameter average's under ("ema", *path)."""
  params, model_state, ema = jax.device_get((state.params, state.model_state,
                                             state.ema_params))
  flat = {path: np.asarray(v[...]) for part in (params, model_state)
          for path, v in nnx.to_flat_state(part)}
  if ema:
    flat |= {("ema", *path): np.asarray(v[...]) for path, v in nnx.to_flat_state(ema)}
  return flat


def _changed(before: dict, after: dict) -> set:
  return {path for path in before if not np.array_equal(before[path], after[path])}


def test_a_linear_probe_changes_the_head_and_nothing_else():
  """Every backbone parameter, statistic and parameter average stays bit for bit."""
  before, after = _train(mode="linear_probe", ema_decay=0.7)
  assert _changed(before, after) == {("head", "kernel"), ("ema", "head", "kernel")}
  assert any(path[-1] == "running_var" for path in before)  # there are statistics to keep


def test_full_fine_tuning_changes_the_backbone_and_its_statistics():
  """The counterpart of the probe's test: without freezing, the same steps move everything."""
  before, after = _train(mode="full")
  changed = _changed(before, after)
  assert ("head", "kernel") in changed and ("conv1", "kernel") in changed
  assert any(path[-1] == "running_var" for path in changed)  # norm layers in training mode


def test_a_backbone_factor_of_zero_keeps_the_backbone_parameters():
  before, after = _train(mode="full", backbone_lr_factor=0.0)
  params = {p for p in before if p[-1] not in ("running_var", "running_mean")}
  assert _changed(before, after) & params == {("head", "kernel")}


def test_the_backbone_factor_scales_the_backbones_updates_only():
  """Adam's first update is the same for any gradient scale, so with factor 0.1 every
  backbone update is a tenth of the factor-1 one, and the head's are equal."""
  start, one = _train(1, mode="full", backbone_lr_factor=1.0)
  _, tenth = _train(1, mode="full", backbone_lr_factor=0.1)
  params = [p for p in start if p[-1] not in ("running_var", "running_mean")]
  for path in params:
    full_update, scaled_update = one[path] - start[path], tenth[path] - start[path]
    factor = 1.0 if path[0] == "head" else 0.1
    np.testing.assert_allclose(scaled_update, factor * full_update, rtol=1e-3, atol=1e-8,
                               err_msg=str(path))
  assert np.abs(one[("conv1", "kernel")] - start[("conv1", "kernel")]).max() > 0


def test_the_default_keeps_one_optimiser_group():
  """Runs without fine-tuning options keep the optimiser state they always had (resumable)."""
  model = models.create("resnet18", rngs=nnx.Rngs(0), **TINY_RESNET)
  labels = train_state.param_labels(model)
  schedule = optax.constant_schedule(1e-3)
  default = loop._optimizer(_config(), schedule, param_labels=labels)
  params = nnx.state(model, nnx.Param)
  assert (jax.tree.structure(default.init(params))
          == jax.tree.structure(optax.chain(optax.adam(schedule)).init(params)))
  assert {v.get_value() for _, v in nnx.to_flat_state(labels)} == {"head", "backbone"}


@pytest.mark.parametrize(("finetune", "init", "message"), [
    ({"mode": "linear_probe"}, None, "config.init_from is not set"),
    ({"new_head": True}, None, "config.init_from is not set"),
    ({"mode": "probe"}, "DIR", "unknown config.finetune.mode 'probe'; known: full, linear_probe"),
    ({"mode": "linear_probe", "backbone_lr_factor": 0.1}, "DIR", "applies to mode=full"),
    ({"backbone_lr_factor": -1.0}, "DIR", "factor is >= 0"),
])
def test_finetune_options_are_checked(finetune, init, message):
  config = _config(**finetune)
  config.init_from = init
  config.model.name = "resnet18"
  with pytest.raises(UserError, match=message):
    init_from.initial_model(config, num_classes=5)
