"""B-cos model families and the registry that builds them by name."""

from bcos_jax.models import (  # noqa: F401  (importing registers the families)
    cifar,
    convnext,
    densenet,
    inception,
    resnet,
    vgg,
    vit,
)
from bcos_jax.models.registry import ModelConfig, config_for, create, names
from bcos_jax.models.saving import load, save

__all__ = ["ModelConfig", "config_for", "create", "load", "names", "save"]
