"""Training: losses, schedules, sharded step functions, checkpoints and the loop."""

from bcos_jax.train.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
