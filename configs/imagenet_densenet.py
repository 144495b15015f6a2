"""ImageNet, v1: the B-cos DenseNet-121 of the CVPR 2022 paper, and its `training+` variant.

    python -m bcos_jax.main --config=configs/imagenet_densenet.py --workdir=/ckpt/v1_densenet
    python -m bcos_jax.main --config=configs/imagenet_densenet.py:training_plus=1 --workdir=...

Recipe (v1 Sec. C.1.2): Adam 2.5e-4, batch 256, 100 epochs, lr ÷ 10 at
epoch 60, BCE with logit bias log(0.01/0.99) (in the model), the v1 ImageNet
augmentations. `training_plus=1` (the paper's longer schedule): 200 epochs,
batch 128, 5 linear warm-up epochs, then cosine.
Hardware: 8 GPUs, several days (twice that for training+). Expected result:
the v1 paper's DenseNet-121 top-1 (Tab. 2; higher with training+).
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import imagenet_v1


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(training_plus="0"))
  if options["training_plus"] not in ("0", "1"):
    raise UserError(f"training_plus must be 0 or 1, got {options['training_plus']!r}")
  return imagenet_v1("v1_densenet121", training_plus=options["training_plus"] == "1")
