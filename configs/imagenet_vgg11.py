"""ImageNet, v1: the B-cos VGG-11 of the CVPR 2022 paper (MaxOut 2, no norm layers).

    python launch/prepare_data.py --dataset=imagenet2012 --manual_dir=DIR   # once
    python -m bcos_jax.main --config=configs/imagenet_vgg11.py --workdir=/ckpt/v1_vgg11

Recipe (v1 Sec. C.1.2, the official code): Adam 2.5e-4, batch 256, 100
epochs, lr ÷ 10 at epoch 60, BCE with logit bias log(0.01/0.99) (in the
model), RandAugment(2, 9), RandomResizedCrop 224, flip, colour jitter 0.4,
PCA lighting 0.1; evaluation resize 256, centre crop 224.
Hardware: 8 GPUs (or a TPU v4-8), several days; the input pipeline needs
about 16 worker processes per GPU (see bench/input_pipeline.py).
Expected result: the v1 paper's VGG-11 top-1 (Tab. 2).
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import imagenet_v1


def get_config(arg: str | None = None) -> ConfigDict:
  parse_variant(arg, {})
  return imagenet_v1("v1_vgg11")
