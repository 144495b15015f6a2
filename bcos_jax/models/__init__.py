"""B-cos model families and the registry that builds them by name."""

from bcos_jax.models import cifar  # noqa: F401  (registers the CIFAR-10 nets)
from bcos_jax.models.registry import ModelConfig, config_for, create, names

__all__ = ["ModelConfig", "config_for", "create", "names"]
