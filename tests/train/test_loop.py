"""The training loop end to end on the digits data at reduced size."""

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import tiny_digits

from bcos_jax.train import loop
from bcos_jax.train.metric_writer import read

ROOT = pathlib.Path(__file__).parents[2]
TINY = ["--config.model.overrides.widths=(4, 4, 8, 8, 8, 8, 8, 8)", "--config.batch_size=16",
        "--config.log_every=2", "--config.num_explanations=0"]


_config = tiny_digits.config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_digits_end_to_end_loss_goes_down(tmp_path, data_dir):
  metrics = loop.train_and_evaluate(_config(data_dir, num_steps=12), tmp_path)
  records = read(tmp_path / "metrics.jsonl")
  train_losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert train_losses[-1] < train_losses[0]
  evals = [r for r in records if "eval/top1" in r]
  assert [r["step"] for r in evals] == [0, 4, 8, 12]  # step 0, every 4, the end
  assert evals[-1]["eval/count"] == 360  # every test image once
  assert 0 <= metrics["eval/top1"] <= 1
  assert sorted(p.name for p in (tmp_path / "explanations").iterdir())[0] == "step_0000000.png"
  assert json.loads((tmp_path / "config.json").read_text())["dataset"] == "bcos_digits"
  assert (tmp_path / "checkpoints" / "12").is_dir()


def _train_losses(workdir):
  return [r["train/loss"] for r in read(workdir / "metrics.jsonl") if "train/loss" in r]


def test_sharded_training_equals_one_device(tmp_path, data_dir):
  """Data parallel over 8 devices equals 1 device (FSDP over several processes:
  tests/launch/test_local.py)."""
  results = {}
  for name, devices in (("one", 1), ("data", 8)):
    results[name] = loop.train_and_evaluate(
        _config(data_dir, num_steps=4, num_devices=devices, num_explanations=0),
        tmp_path / name)
  for name in ("data",):
    for key in ("eval/loss", "eval/top1"):
      assert results[name][key] == pytest.approx(results["one"][key], rel=1e-4, abs=1e-6)
    assert _train_losses(tmp_path / name) == pytest.approx(_train_losses(tmp_path / "one"),
                                                           rel=1e-4)


def test_fsdp_shards_parameters():
  import optax
  from flax import nnx

  from bcos_jax import models, sharding
  from bcos_jax.train import state as train_state

  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=(8,) * 8)
  _, state = train_state.create(model, optax.adam(1e-3))
  placed = sharding.place_state(state, sharding.make_mesh(8, fsdp=4))
  kernel = placed.params["layers"][1]["kernel"][...]  # (3, 3, 8, 16)
  assert kernel.sharding.shard_shape(kernel.shape) == (3, 3, 8, 4)
  assert placed.step.sharding.is_fully_replicated
  with pytest.raises(ValueError, match="fsdp=3 must divide"):
    sharding.make_mesh(8, fsdp=3)


def test_gradient_accumulation_equals_a_larger_batch(tmp_path, data_dir):
  """Two accumulated batches of 16 make the same update as one batch of 32."""
  big = loop.train_and_evaluate(_config(data_dir, batch_size=32, num_steps=2, eval_every=2,
                                        num_explanations=0), tmp_path / "big")
  accumulated = loop.train_and_evaluate(
      _config(data_dir, batch_size=16, num_steps=4, accumulate_steps=2, eval_every=4,
              num_explanations=0), tmp_path / "accumulated")
  assert accumulated["eval/loss"] == pytest.approx(big["eval/loss"], rel=1e-4)


def test_ema_bf16_agc_mixing_and_off_label_loss_train(tmp_path, data_dir):
  """The v2 recipe options together: the run is finite, keeps an EMA, logs TensorBoard."""
  import numpy as np
  from tensorboardX.proto import event_pb2

  from bcos_jax import models

  config = _config(data_dir, num_steps=4, ema_decay=0.5, compute_dtype="bfloat16",
                   num_explanations=1)
  config.optimizer.agc_clip_factor = 0.01
  config.loss = {"name": "uniform_off_label_bce"}
  config.mixing = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}
  metrics = loop.train_and_evaluate(config, tmp_path)
  assert np.isfinite(metrics["eval/loss"])
  records = [r for r in read(tmp_path / "metrics.jsonl") if "train/loss" in r]
  assert all(np.isfinite(r["train/loss"]) for r in records)
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events
  raw = events[0].read_bytes()
  tags, offset = set(), 0
  while offset < len(raw):  # TFRecord framing: length, crc, payload, crc
    length = int.from_bytes(raw[offset:offset + 8], "little")
    event = event_pb2.Event.FromString(raw[offset + 12:offset + 12 + length])
    tags |= {v.tag for v in event.summary.value}
    offset += 16 + length
  assert {"train/loss", "eval/top1"} <= tags
  model = models.load(tmp_path)  # the parameter average: the run kept one
  assert model.config.name == "v1_cifar9l_b2"


def test_unknown_config_field_fails_with_its_name(tmp_path, data_dir):
  config = _config(data_dir)
  config.optimizer.learnig_rate = 1e-3
  with pytest.raises(ValueError, match="'optimizer.learnig_rate'"):
    loop.train_and_evaluate(config, tmp_path)


def test_batch_that_does_not_divide_over_devices(tmp_path, data_dir):
  with pytest.raises(ValueError, match="does not divide over the 8 devices"):
    loop.train_and_evaluate(_config(data_dir, batch_size=12, num_devices=8), tmp_path)


def test_non_finite_loss_stops_with_the_step(tmp_path, data_dir):
  config = _config(data_dir, num_explanations=0)
  config.optimizer.learning_rate = float("nan")
  with pytest.raises(loop.NonFiniteLossError, match="at step 2"):
    loop.train_and_evaluate(config, tmp_path)


def _main(workdir, data_dir, steps):
  return [sys.executable, "-m", "bcos_jax.main", "--config=configs/digits.py",
          f"--workdir={workdir}", f"--config.data_dir={data_dir}", f"--config.num_steps={steps}",
          "--config.eval_every=100", "--config.checkpoint_every=4", *TINY]


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
  """`python -m bcos_jax.main` SIGTERMed, then run again, ends as a run never stopped.

  The uninterrupted run is this process's, on 2 of its devices: the same mesh and
  the same random numbers (tests/conftest.py) as the 2-device subprocess."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  steps = 16
  straight = tmp_path / "straight"
  loop.train_and_evaluate(
      _config(data_dir, num_steps=steps, num_devices=2, eval_every=100, num_explanations=0,
              progress_bar=False), straight)

  interrupted = tmp_path / "interrupted"
  process = subprocess.Popen(_main(interrupted, data_dir, steps), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = interrupted / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and process.poll() is None:
    if metrics.exists() and any(r["step"] >= 6 for r in read(metrics)):
      process.send_signal(signal.SIGTERM)
      break
    time.sleep(0.2)
  _, stderr = process.communicate(timeout=600)
  assert process.returncode == 75, stderr[-3000:]  # EX_TEMPFAIL: a scheduler requeues it
  saved = sorted(int(p.name) for p in (interrupted / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and saved[-1] < steps, "SIGTERM should have stopped the run early"
  assert f"SIGTERM: stopped after step {saved[-1]} with its checkpoint saved" in stderr

  subprocess.run(_main(interrupted, data_dir, steps), cwd=ROOT, env=env, check=True,
                 capture_output=True, timeout=900)
  final = {k: v for k, v in read(straight / "metrics.jsonl")[-1].items() if "per_s" not in k}
  resumed = {k: v for k, v in read(metrics)[-1].items() if "per_s" not in k}
  assert final["step"] == resumed["step"] == steps
  assert resumed == pytest.approx(final, rel=1e-6)


def test_train_step_traces_once(data_dir):
  import chex
  import jax
  import optax
  from flax import nnx

  from bcos_jax import models, sharding
  from bcos_jax.train import state as train_state
  from bcos_jax.train import steps

  chex.clear_trace_counter()
  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=(4,) * 8)
  optimizer = optax.adam(1e-3)
  graphdef, state = train_state.create(model, optimizer)
  mesh = sharding.make_mesh()
  state = sharding.place_state(state, mesh)
  step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-3), mesh, state,
                               trace_check=chex.assert_max_traces(n=1))
  rng = jax.random.key(0)
  for i in range(3):
    images = jax.random.randint(jax.random.fold_in(rng, i), (16, 32, 32, 3), 0, 256)
    batch = sharding.shard_batch({"image": jax.numpy.asarray(images, "uint8"),
                               "label": jax.numpy.arange(16) % 10}, mesh)
    state, metrics = step(state, batch)
  assert int(state.step) == 3 and step._cache_size() == 1
  chex.assert_tree_all_finite(metrics)


def test_train_step_updates_batchnorm_statistics():
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  from bcos_jax import models, sharding
  from bcos_jax.train import state as train_state
  from bcos_jax.train import steps

  model = models.create("resnet18", rngs=nnx.Rngs(0), stem_width=8, layers=(1, 1), num_classes=10)
  optimizer = optax.adam(1e-3)
  graphdef, state = train_state.create(model, optimizer)
  before = np.asarray(state.model_state["bn1"]["running_var"][...])
  mesh = sharding.make_mesh()
  state = sharding.place_state(state, mesh)
  step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-3), mesh, state)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)), jnp.uint8)
  batch = sharding.shard_batch({"image": images, "label": jnp.arange(16) % 10}, mesh)
  state, metrics = step(state, batch)
  after = np.asarray(state.model_state["bn1"]["running_var"][...])
  assert np.isfinite(float(metrics["loss"]))
  assert not np.allclose(before, after)  # momentum 0.1 towards the batch variance


def test_resuming_with_a_different_train_state_says_so(tmp_path, data_dir):
  from bcos_jax.train.checkpointing import CheckpointMismatchError

  loop.train_and_evaluate(_config(data_dir, num_steps=4, num_explanations=0), tmp_path)
  with pytest.raises(CheckpointMismatchError, match="new workdir"):
    loop.train_and_evaluate(_config(data_dir, num_steps=8, ema_decay=0.9, num_explanations=0),
                            tmp_path)


def test_auxiliary_loss_adds_the_weighted_aux_head_loss():
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  from bcos_jax import models, sharding
  from bcos_jax.train import losses, steps
  from bcos_jax.train import state as train_state

  class TwoHeads(nnx.Module):
    def __init__(self, *, rngs):
      self.main = nnx.Linear(6, 5, rngs=rngs)
      self.aux = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x, *, explain=False):
      return self.main(x.mean(axis=(1, 2)))

    def logits_with_aux(self, x, *, explain=False):
      pooled = x.mean(axis=(1, 2))
      return self.main(pooled), self.aux(pooled)

  if "test_two_heads" not in models.names():
    models.register("test_two_heads", models.Family("two_heads", TwoHeads, lambda m, p: {},
                                                    aux_head="aux"))
  model = models.create("test_two_heads", rngs=nnx.Rngs(0))
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 4, 4, 3)), jnp.uint8)
  labels = jnp.arange(8) % 5
  x6 = models.input_transform(model)(images)
  targets = losses.targets_from_labels(labels, 5)
  expected = losses.bce(model(x6), targets) + 0.5 * losses.bce(model.logits_with_aux(x6)[1],
                                                                 targets)
  optimizer = optax.adam(1e-3)
  graphdef, state = train_state.create(model, optimizer)
  mesh = sharding.make_mesh(1)
  state = sharding.place_state(state, mesh)
  step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-3), mesh, state,
                               steps.StepOptions(aux_weight=0.5))
  _, metrics = step(state, sharding.shard_batch({"image": images, "label": labels}, mesh))
  assert float(metrics["loss"]) == pytest.approx(float(jax.device_get(expected)), rel=1e-5)


# The conventional ViT baselines, at a tiny size, on the digits (32×32): they train through
# the same loop on their own input encoding (normalised RGB) and run through the
# localisation command with post-hoc methods.
STANDARD_TINY = {
    "standard_simple_vit_ti_patch16_224": dict(patch_size=4, dim=32, depth=2, heads=2,
                                               mlp_dim=64, num_classes=10),
    "standard_vitc_ti_patch1_14": dict(stem_widths=(16, 32), dim=32, depth=2, heads=2,
                                       mlp_dim=64, num_classes=10),
}
# The prior log-odds of a class (as the B-cos models start): BCE training then does not spend
# its first steps pushing every logit down, and 60 steps classify 6-8 digits correctly.
PRIOR = -math.log(9)


@pytest.mark.parametrize("name", sorted(STANDARD_TINY))
def test_standard_baselines_train_and_evaluate(tmp_path, data_dir, name):
  from ml_collections import ConfigDict

  # Long enough that several classes have correctly classified images (the grids need them).
  config = _config(data_dir, num_steps=60, batch_size=32, eval_every=60, checkpoint_every=60,
                   log_every=30)
  config.optimizer.schedule, config.optimizer.learning_rate = "constant", 3e-3
  config.optimizer.warmup_epochs = 0
  config.model.name = name
  config.model.overrides = ConfigDict({**STANDARD_TINY[name], "logit_bias": PRIOR})
  metrics = loop.train_and_evaluate(config, tmp_path / "run")
  assert 0 <= metrics["eval/top1"] <= 1 and metrics["eval/count"] == 360
  assert not list((tmp_path / "run" / "explanations").iterdir())  # not a B-cos network
  layer = "stem.1" if "vitc" in name else "encoders.0"
  options = json.dumps({"grad_cam": {"layer": layer, "side": "output"}})
  result = subprocess.run(
      [sys.executable, "-m", "bcos_jax.evaluate", f"--workdir={tmp_path / 'run'}", "--grid=2",
       "--grids=1", "--smooth=1", "--conf_thresh=0", "--methods=input_x_gradient,grad_cam",
       f"--method_options={options}", f"--out={tmp_path / 'out'}"], cwd=ROOT,
      env={**os.environ, "XLA_FLAGS": ""}, capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / "out" / "1_2x2_noconfthresh_smooth1.json").read_text())
  assert set(summary["scores"]) == {"input_x_gradient", "grad_cam"}


def test_an_auxiliary_loss_without_an_auxiliary_head_fails_at_start(tmp_path, data_dir):
  config = _config(data_dir)
  config.loss.aux_weight = 0.4
  with pytest.raises(ValueError, match="auxiliary head.*aux_weight=0"):
    loop.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / "checkpoints").exists()
