"""B-cos model families and the registry that builds them by name."""

from bcos_jax.models import cifar, resnet  # noqa: F401  (registering the families)
from bcos_jax.models.registry import ModelConfig, config_for, create, names

__all__ = ["ModelConfig", "config_for", "create", "names"]
