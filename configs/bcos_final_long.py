"""ImageNet, v2 `bcos_final_long`: the long recipe (ResNet-50/152, DenseNet-121, ConvNeXts).

    python -m bcos_jax.main --config=configs/bcos_final_long.py:model=resnet50_long --workdir=...

Recipe (the official v2 experiment, after torchvision's recipe): Adam 1e-3,
batch 1024, 600 epochs, 5 warm-up epochs then cosine, uniform-off-label BCE,
AGC, RandomResizedCrop 176 + TrivialAugmentWide + random erasing 0.1,
mixup 0.2 / cutmix 1.0, an EMA of the parameters (evaluated), stochastic
depth 0.1 for the ResNets; evaluation resize 232, crop 224.
Variants: model in {resnet50_long, resnet152_long, densenet121_long,
convnext_tiny, convnext_base, convnext_tiny_bnu, convnext_base_bnu};
accumulate=k (a divisor of 1024) splits each update's batch of 1024 into k
steps of 1024/k; the effective batch, schedule and EMA decay per update stay
(the official runs use accumulate=2 for resnet152 and the ConvNeXt-Base models).
Hardware: 8 GPUs or a TPU v4-32; weeks. Expected result (the official model
zoo, top-1): resnet50_long 79.47%, resnet152_long 80.14%, densenet121_long
77.30%, convnext_tiny 77.49%, convnext_base 79.65%, convnext_tiny_bnu 76.83%,
convnext_base_bnu 80.14%.
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import bcos_final_long

# Every bcos_final_long model and its overrides: stochastic depth 0.1 for the
# ResNets (the official recipe); the DenseNet and the ConvNeXts keep their
# registry defaults.
MODEL_OVERRIDES = {
    "resnet50_long": {"stochastic_depth_prob": 0.1},
    "resnet152_long": {"stochastic_depth_prob": 0.1},
    "densenet121_long": {},
    "convnext_tiny": {},
    "convnext_base": {},
    "convnext_tiny_bnu": {},
    "convnext_base_bnu": {},
}


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="resnet50_long", accumulate="1"))
  name = options["model"]
  if name not in MODEL_OVERRIDES:
    raise UserError(f"unknown bcos_final_long model {name!r}; "
                     f"valid: {', '.join(MODEL_OVERRIDES)}")
  try:
    accumulate = int(options["accumulate"])
  except ValueError:
    raise UserError(f"accumulate must be an integer, got {options['accumulate']!r}") from None
  return bcos_final_long(name, accumulate_steps=accumulate, **MODEL_OVERRIDES[name])
