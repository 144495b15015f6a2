"""ImageNet, v2 `bcos_final`: the TPAMI 2024 CNNs (ResNets, ResNeXt, DenseNets, VGG-11).

    python -m bcos_jax.main --config=configs/bcos_final.py:model=resnet50 --workdir=/ckpt/r50

Recipe (the official v2 experiment): Adam 1e-3, batch 256, 90 epochs (100
for resnext50_32x4d), linear warm-up over 5 epochs from 1% of the peak then
cosine, uniform-off-label BCE (off targets 1/1000), adaptive gradient
clipping, RandomResizedCrop 224 and flips; evaluation resize 256, crop 224.
Variants: model in {resnet18, resnet34, resnet50, resnet101, resnet152,
resnext50_32x4d, densenet121, densenet161, densenet169, densenet201, vgg11_bnu}.
Hardware: 4 GPUs (batch 64 each, as the official runs) or a TPU v4-8; 1-3 days.
Expected result (the official model zoo, top-1): resnet18 68.74%, resnet34
72.28%, resnet50 75.88%, resnet101 76.53%, resnet152 76.48%, resnext50_32x4d
75.82%, densenet121 73.61%, densenet161 76.62%, densenet169 75.19%,
densenet201 75.48%, vgg11_bnu 69.31%.
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import bcos_final

# Every bcos_final model and its epochs (the official runs: 100 for the ResNeXt).
EPOCHS = {
    "resnet18": 90, "resnet34": 90, "resnet50": 90, "resnet101": 90, "resnet152": 90,
    "resnext50_32x4d": 100,
    "densenet121": 90, "densenet161": 90, "densenet169": 90, "densenet201": 90,
    "vgg11_bnu": 90,
}


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="resnet50"))
  name = options["model"]
  if name not in EPOCHS:
    raise UserError(f"unknown bcos_final model {name!r}; valid: {', '.join(EPOCHS)}")
  return bcos_final(name, num_epochs=EPOCHS[name])
