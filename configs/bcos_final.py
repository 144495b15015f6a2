"""ImageNet, v2 `bcos_final`: the TPAMI 2024 CNNs (ResNets, ResNeXt, DenseNets, VGG-11).

    python -m bcos_jax.main --config=configs/bcos_final.py:model=resnet50 --workdir=/ckpt/r50

Recipe (the official v2 experiment): Adam 1e-3, batch 256, 90 epochs (100
for resnext50_32x4d), linear warm-up over 5 epochs from 1% of the peak then
cosine, uniform-off-label BCE (off targets 1/1000), adaptive gradient
clipping, RandomResizedCrop 224 and flips; evaluation resize 256, crop 224.
Variants: model=<any v2 CNN name>, e.g. resnet18 ... resnet152, resnext50_32x4d,
densenet121 ... densenet201, vgg11_bnu.
Hardware: 4 GPUs (batch 64 each, as the official runs) or a TPU v4-8; 1-3 days.
Expected result (the official model zoo, top-1): resnet18 68.74%, resnet34
72.28%, resnet50 75.88%, resnet101 76.53%, resnet152 76.48%, resnext50_32x4d
75.82%, densenet121 73.61%, densenet161 76.62%, densenet169 75.19%,
densenet201 75.48%, vgg11_bnu 69.31%.
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import bcos_final


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="resnet50"))
  config = bcos_final(options["model"])
  if options["model"] == "resnext50_32x4d":
    config.num_epochs = 100
  return config
