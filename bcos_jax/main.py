"""Entry point: python -m bcos_jax.main --config=configs/<name>.py[:variant] --workdir=DIR."""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from bcos_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and explanations "
                               "go; a run resumes from the checkpoint found there.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax

  from bcos_jax.train import config_schema

  config = config_schema.complete(_CONFIG.value)
  # Several processes (hosts): jax.distributed finds its peers from the
  # cluster environment (TPU, Slurm, or the JAX_COORDINATOR_ADDRESS variables).
  if config.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
  from bcos_jax.train import train_and_evaluate

  logging.info("JAX %s, process %d of %d, devices: %s", jax.__version__, jax.process_index(),
               jax.process_count(), jax.devices())
  logging.info("config:\n%s", config)
  metrics = train_and_evaluate(config, _WORKDIR.value)
  logging.info("final evaluation: %s", metrics)
  if metrics:  # empty when a SIGTERM stopped the run before its next evaluation
    print(f"final {config.eval_split} top-1 {metrics['eval/top1']:.4f}, top-5 "
          f"{metrics['eval/top5']:.4f}, loss {metrics['eval/loss']:.4g} "
          f"({int(metrics['eval/count']):,} images)", flush=True)


if __name__ == "__main__":
  cli.run(main)
