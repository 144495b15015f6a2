"""ImageNet, v1: the B-cos Inception-v3 of the CVPR 2022 paper, with its auxiliary loss.

    python -m bcos_jax.main --config=configs/imagenet_inception.py --workdir=/ckpt/v1_inception

Recipe (v1 Sec. C.1.2): Adam 2.5e-4, batch 256, 100 epochs, lr ÷ 10 at
epoch 60, BCE with logit bias log(0.01/0.99) on the main and (weight 0.4, as
torchvision's Inception-v3 recipe) the auxiliary head; the v1 augmentations
at 299 (recipe inception_v1: evaluation resize 320, centre crop 299).
Hardware: 8 GPUs, several days. Expected result: the v1 paper's
Inception-v3 top-1 (Tab. 2).
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import imagenet_v1


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(aux_weight="0.4"))
  config = imagenet_v1("v1_inception_v3", recipe="inception_v1")
  config.loss.aux_weight = float(options["aux_weight"])
  return config
