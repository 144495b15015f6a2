"""Entry point: python -m bcos_jax.main --config=configs/<name>.py[:variant] --workdir=DIR.

Exit status: 0 when the run is trained to its end; 75 (EX_TEMPFAIL) when SIGTERM
stopped it early with its checkpoint saved, so that a scheduler requeues it (the
same command resumes); 2 for a user error, with one line saying what to change.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bcos_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and explanations "
                               "go; a run resumes from the checkpoint found there.")
flags.mark_flags_as_required(["config", "workdir"])
STOPPED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped early, checkpoint saved; run again to resume


def _process_variables() -> dict[str, int]:
  """JAX_NUM_PROCESSES and JAX_PROCESS_ID (set by launch/local.py beside
  JAX_COORDINATOR_ADDRESS, which JAX reads itself); {} on a cluster JAX detects."""
  names = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
  return {arg: int(os.environ[name]) for arg, name in names.items() if name in os.environ}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax

  from bcos_jax.train import config_schema

  config = config_schema.complete(_CONFIG.value)
  # Several processes (hosts): jax.distributed finds its peers from the cluster
  # environment (TPU VMs, Slurm) or from the variables launch/local.py sets.
  if config.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(**_process_variables())
  from bcos_jax.train import TrainingStopped, train_and_evaluate

  logging.info("JAX %s, process %d of %d, devices: %s", jax.__version__, jax.process_index(),
               jax.process_count(), jax.devices())
  logging.info("config:\n%s", config)
  try:
    metrics = train_and_evaluate(config, _WORKDIR.value)
  except TrainingStopped:  # the loop said where it stopped
    sys.exit(STOPPED_EXIT_CODE)
  logging.info("final evaluation: %s", metrics)
  if metrics and jax.process_index() == 0:  # empty: a finished run, resumed
    print(f"final {config.eval_split} top-1 {metrics['eval/top1']:.4f}, top-5 "
          f"{metrics['eval/top5']:.4f}, loss {metrics['eval/loss']:.4g} "
          f"({int(metrics['eval/count']):,} images)", flush=True)


if __name__ == "__main__":
  cli.run(main)
