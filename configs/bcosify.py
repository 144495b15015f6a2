"""ImageNet, B-cosification: fine-tune a B-cosified torchvision ResNet/DenseNet.

    # 1. B-cosify a torchvision checkpoint (torchvision's own file; no PyTorch needed)
    python -m bcos_jax.convert --bcosify --torch_checkpoint resnet50-11ad3fa6.pth \\
        --out /ckpt/bcosified_resnet50
    # 2. fine-tune it
    python -m bcos_jax.main --config=configs/bcosify.py:model=resnet50 \\
        --config.init_from=/ckpt/bcosified_resnet50 --workdir=/ckpt/bcosify_r50

Recipe (the official `experiments/ImageNet/bcosification` configs `resnet_18`,
`resnet_50`, `densenet_121` of shrebox/B-cosification): Adam 1e-4, cosine
annealing over 90 epochs without warm-up, batch 256 (64 on each of 4 GPUs),
uniform-off-label BCE, adaptive gradient clipping, the bcos_final data recipe
(RandomResizedCrop 224 and flips; evaluation resize 256, crop 224). The
model is B = 2 with ReLU, uncentered BatchNorm and no biases; the official
ablations are `python -m bcos_jax.convert --bcosify --b=...` and
`bcos_jax.convert.bcosify(..., learn_b=True, keep_biases=True, relu=False)`.
Variants: model in {resnet18, resnet50, densenet121} (the official configs;
every torchvision depth converts and fine-tunes with `model=` of another
`bcosified_*` architecture name's suffix as well).
Hardware: 4 GPUs or a TPU v4-8, as bcos_final; 90 epochs take as long as a
bcos_final run of the same network (1-3 days), and the B-cos accuracy is
reached early: the paper reports the B-cosified models reaching the accuracy
of B-cos models trained from scratch in a fraction of the epochs (4.7×
faster for DenseNet-121, Fig. 1 of Arya et al., arXiv:2411.00715).
Expected result: the evaluation at step 0 shows the converted network's
accuracy before any fine-tuning; after it, top-1 at or above the B-cos
model of the same architecture trained from scratch (configs/bcos_final.py
lists those), as the paper's tables report for each model.
Without `--config.init_from` the run is refused: a B-cosified network
starts from a converted pretrained one, never from a random initialisation.
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import bcosification

# The official configs, and every other torchvision depth bcosify converts.
MODELS = ("resnet18", "resnet50", "densenet121", "resnet34", "resnet101", "resnet152",
          "densenet161", "densenet169", "densenet201")


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="resnet50"))
  if options["model"] not in MODELS:
    raise UserError(f"unknown B-cosification model {options['model']!r}; valid: "
                     f"{', '.join(MODELS)}")
  return bcosification(f"bcosified_{options['model']}")
