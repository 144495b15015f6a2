"""ImageNet, v1: the B-cos ResNet-34 of the CVPR 2022 paper (MaxOut 2, no norm layers).

    python -m bcos_jax.main --config=configs/imagenet_resnet34.py --workdir=/ckpt/v1_resnet34

Recipe (v1 Sec. C.1.2, the official code): Adam 2.5e-4, batch 256, 100
epochs, lr ÷ 10 at epoch 60, BCE with logit bias log(0.01/0.99) (in the
model), the v1 ImageNet augmentations (recipe imagenet_v1).
Hardware: 8 GPUs (or a TPU v4-8), several days. Expected result: the v1
paper's ResNet-34 top-1 (Tab. 2).
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import imagenet_v1


def get_config(arg: str | None = None) -> ConfigDict:
  parse_variant(arg, {})
  return imagenet_v1("v1_resnet34")
