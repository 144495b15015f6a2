"""ImageNet, v2 `vit_final`: the B-cos ViTs (SimpleViT and ViT-C, Ti/S/B/L).

    python -m bcos_jax.main --config=configs/vit_final.py:model=simple_vit_ti_patch16_224 \
        --workdir=/ckpt/vit_ti

Recipe (the official v2 experiment): Adam 1e-3, batch 2048 (1024 for the B
and L models), 90 epochs, linear warm-up over 10,000 steps (50,000 for B and
L) from 1% of the peak, then cosine; uniform-off-label BCE, AGC,
RandomResizedCrop 224 + RandAugment(2, 10) + flip, mixup 0.2.
Variants: model=<a B-cos ViT name>.
Hardware: 8 GPUs or a TPU v4-32; days. Expected result: the B-cos ViT
accuracies of the TPAMI paper (the official zoo has no ViT weights).
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import vit_final


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="simple_vit_ti_patch16_224"))
  name = options["model"]
  big = "_l_" in name or "simple_vit_b" in name
  return vit_final(name, batch_size=1024 if big else 2048,
                   warmup_steps=50_000 if big else 10_000)
