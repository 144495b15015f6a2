"""Training: losses, schedules, sharded step functions, checkpoints and the loop."""

from bcos_jax.train.loop import TrainingStopped, train_and_evaluate

__all__ = ["TrainingStopped", "train_and_evaluate"]
