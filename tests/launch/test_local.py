"""launch/local.py for real: several processes (jax.distributed, gloo) train as one.

One process with 8 devices (this pytest process), and 2 processes × 4 devices
started by the launcher, train the tiny digits model for 8 steps; the losses,
evaluations and final parameters agree, checkpoints move between the two
topologies (and between fsdp=4 and data parallelism) and continue identically,
SIGTERM stops every process at the same step, and a killed process stops the
run with a message that names it.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
import tiny_digits
from flax import nnx

from bcos_jax import models
from bcos_jax.data import digits
from bcos_jax.train import loop
from bcos_jax.train.metric_writer import read

ROOT = pathlib.Path(__file__).parents[2]
STEPS = 8
SETTINGS = {"model.overrides.widths": "(4, 4, 8, 8, 8, 8, 8, 8)", "batch_size": "16",
            "num_steps": str(STEPS), "log_every": "2", "eval_every": "4",
            "checkpoint_every": "4", "num_explanations": "2", "progress_bar": "False"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  digits.ensure_prepared(path)  # before several processes would build it at once
  return path


def _launcher(workdir, data_dir, processes=2, **changes) -> list[str]:
  settings = {**SETTINGS, "data_dir": data_dir, **changes}
  return [sys.executable, "launch/local.py", f"--processes={processes}",
          "--devices_per_process=4", "--grace_s=10", "--", "--config=configs/digits.py",
          f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in settings.items()]]


def _train_here(workdir, data_dir):
  """The same run in this process, on its 8 devices."""
  loop.train_and_evaluate(tiny_digits.config(data_dir, num_devices=8, progress_bar=False),
                          workdir)


def _metrics(workdir) -> list[dict]:
  return [{k: v for k, v in r.items() if "per_s" not in k} for r in read(workdir / "metrics.jsonl")]


def _params(workdir):
  return jax.device_get(nnx.state(models.load(workdir), nnx.Param))


def _assert_same_run(workdir, reference, every_record=True):
  """The same evaluations (and, with `every_record`, the same training logs) and the same
  final parameters. A run stopped by SIGTERM logs once more, where it stopped."""
  got, want = _metrics(workdir), _metrics(reference)
  if not every_record:
    got, want = ([r for r in records if "eval/top1" in r] for records in (got, want))
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for g, w in zip(got, want, strict=True):
    assert g == pytest.approx(w, rel=1e-5, abs=1e-6)
  chex.assert_trees_all_close(_params(workdir), _params(reference), rtol=1e-5, atol=1e-6)


def _rewind(source, target, step):
  """A copy of a finished run as it was at checkpoint `step` (later ones and their metrics
  gone), to resume from there."""
  shutil.copytree(source, target)
  for path in (target / "checkpoints").iterdir():
    if path.name.isdigit() and int(path.name) > step:
      shutil.rmtree(path)
  kept = [r for r in read(source / "metrics.jsonl") if r["step"] <= step]
  (target / "metrics.jsonl").write_text("".join(f"{json.dumps(r)}\n" for r in kept))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("one_process")
  _train_here(workdir, data_dir)
  return workdir


def test_two_processes_with_fsdp_stop_together_on_sigterm_and_continue_in_one(
    one_process, data_dir, tmp_path):
  two = tmp_path / "two_processes_fsdp4"
  process = subprocess.Popen(_launcher(two, data_dir, fsdp="4"), cwd=ROOT, env=os.environ,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  output = []
  for line in process.stdout:
    output.append(line)
    if line.startswith("[0] step 0/"):  # before the first training step
      process.send_signal(signal.SIGTERM)  # as a preempted host's scheduler would
      break
  rest, _ = process.communicate(timeout=300)
  lines = "".join(output + [rest]).splitlines()
  assert process.returncode == 75, "\n".join(lines[-40:])  # stopped, checkpoint saved
  assert any(line.startswith("[0] training v1_cifar9l_b2") and "mesh data=2 × fsdp=4" in line
             for line in lines)
  assert not any(line.startswith("[1] step") for line in lines)  # process 0 speaks
  assert not any("[Gloo]" in line for line in lines)
  stopped = [line for line in lines if "SIGTERM: stopped after step" in line]
  assert len(stopped) == 1, stopped  # said once, for every process
  step = int(stopped[0].split("after step ")[1].split()[0])
  assert 0 < step < STEPS
  # Both processes stopped at that step: its checkpoint is whole, and the evaluation at
  # step 0 is the one-process run's.
  saved = [int(p.name) for p in (two / "checkpoints").iterdir() if p.name.isdigit()]
  assert max(saved) == step
  assert _metrics(two)[0] == pytest.approx(_metrics(one_process)[0], rel=1e-5, abs=1e-6)
  assert (two / "explanations" / f"step_{0:07d}.png").is_file()

  # The 2-process fsdp=4 checkpoint continues in one process, data parallel, to the same end.
  _train_here(two, data_dir)
  _assert_same_run(two, one_process, every_record=False)


def test_one_process_checkpoint_continues_in_two_and_a_killed_process_stops_the_run(
    one_process, data_dir, tmp_path):
  workdir = tmp_path / "resumed_in_two"
  _rewind(one_process, workdir, 4)
  command = _launcher(workdir, data_dir)
  process = subprocess.Popen(command, cwd=ROOT, env=os.environ, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
  output = []
  for line in process.stdout:
    output.append(line)
    if line.startswith("[0] resumed from the checkpoint of step 4"):
      break
  pid = _child_pid(process.pid, index=1)
  os.kill(pid, signal.SIGKILL)
  rest, _ = process.communicate(timeout=120)
  text = "".join(output) + rest
  assert process.returncode != 0, text[-3000:]
  assert "launch/local.py: process 1 failed (exit status -9); stopping the other 1" in text

  # The same command again resumes from the newest checkpoint and ends as one process did.
  result = subprocess.run(command, cwd=ROOT, env=os.environ, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "[0] resumed from the checkpoint of step 4" in result.stdout
  _assert_same_run(workdir, one_process)


def _child_pid(launcher_pid: int, index: int) -> int:
  """The pid of the launcher's process `index` (its environment says JAX_PROCESS_ID)."""
  deadline = time.time() + 60
  while time.time() < deadline:
    for child in pathlib.Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text(
        ).split():
      try:
        environ = pathlib.Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
      except FileNotFoundError:
        continue
      if f"JAX_PROCESS_ID={index}".encode() in environ:
        return int(child)
    time.sleep(0.2)
  raise AssertionError(f"the launcher started no process {index}")


def test_fsdp8_creates_and_restores_no_whole_parameter_on_any_device(tmp_path):
  import optax  # noqa: PLC0415
  import orbax.checkpoint as ocp  # noqa: PLC0415

  from bcos_jax import sharding  # noqa: PLC0415
  from bcos_jax.train import state as train_state  # noqa: PLC0415

  mesh = sharding.make_mesh(8, fsdp=8)
  # A ViT-C with every kind of its parameters (conv stem, attention, MLP, norms, head), at
  # 2 of its 12 blocks: the check is per parameter, and the compile is short.
  abstract, create = train_state.create_sharded(
      lambda: models.create("vitc_ti_patch1_14", rngs=nnx.Rngs(0), depth=2), optax.adam(1e-3),
      mesh)

  def assert_sharded(state):
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
      if leaf.size <= 1:
        continue  # a scalar (the step, Adam's count) cannot be split
      for shard in leaf.addressable_shards:
        assert shard.data.size * 8 == leaf.size, (jax.tree_util.keystr(path), leaf.shape,
                                                  shard.data.shape)

  state = create()
  assert_sharded(state)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "state", state)
  del state
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(tmp_path / "state", abstract)
  assert_sharded(restored)
  assert int(restored.step) == 0 and np.isfinite(
      jax.device_get(jax.tree.leaves(restored.params)[0])).all()
