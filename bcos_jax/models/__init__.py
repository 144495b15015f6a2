"""Model families, the registry that builds them by name, and the model contract.

Every family (one module each) declares, where it is defined, what tools
need to know about it (`registry.Family`): its input encoding, whether it is
a B-cos network, its Grad-CAM layer, its official key map, its auxiliary
head. Tools read that through `info`, `input_transform`, `check_input` and
`eval_mode`; models are saved and loaded with their config (`save`, `load`);
`pretrained(name)` returns a hub model with its official weights (downloaded
once, verified and cached).
"""

from bcos_jax.models import (  # noqa: F401  (importing registers the families)
    cifar,
    convnext,
    densenet,
    inception,
    resnet,
    vgg,
    vit,
)
from bcos_jax.models.contract import (
    ModelInfo,
    check_input,
    eval_mode,
    has_aux_head,
    info,
    input_transform,
)

# The function shadows its module as an attribute of the package: reach the module's table
# and helpers with `from bcos_jax.models.pretrained import WEIGHTS, available`.
from bcos_jax.models.pretrained import pretrained
from bcos_jax.models.registry import Family, ModelConfig, config_for, create, names, register
from bcos_jax.models.saving import load, save

__all__ = ["Family", "ModelConfig", "ModelInfo", "check_input", "config_for", "create",
           "eval_mode", "has_aux_head", "info", "input_transform", "load", "names", "pretrained",
           "register", "save"]
