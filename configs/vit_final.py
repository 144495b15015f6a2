"""ImageNet, v2 `vit_final`: the B-cos ViTs (SimpleViT and ViT-C, Ti/S/B/L).

    python -m bcos_jax.main --config=configs/vit_final.py:model=simple_vit_ti_patch16_224 \
        --workdir=/ckpt/vit_ti

Recipe (the official v2 experiment): Adam 1e-3, batch 2048 (1024 for the B
and L models), 90 epochs, linear warm-up over 10,000 steps (50,000 for B and
L) from 1% of the peak, then cosine; uniform-off-label BCE, AGC,
RandomResizedCrop 224 + RandAugment(2, 10) + flip, mixup 0.2.
Variants: model in {simple_vit_ti_patch16_224, simple_vit_s_patch16_224,
simple_vit_b_patch16_224, simple_vit_l_patch16_224, vitc_ti_patch1_14,
vitc_s_patch1_14, vitc_b_patch1_14, vitc_l_patch1_14}.
Hardware: 8 GPUs or a TPU v4-32; days. Expected result: the B-cos ViT
accuracies of the TPAMI paper (the official zoo has no ViT weights).
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import vit_final

# Every B-cos ViT: (batch size, warm-up steps); B and L 1024 and 50,000, Ti and S
# 2048 and 10,000.
SIZES = {
    "simple_vit_ti_patch16_224": (2048, 10_000),
    "simple_vit_s_patch16_224": (2048, 10_000),
    "simple_vit_b_patch16_224": (1024, 50_000),
    "simple_vit_l_patch16_224": (1024, 50_000),
    "vitc_ti_patch1_14": (2048, 10_000),
    "vitc_s_patch1_14": (2048, 10_000),
    "vitc_b_patch1_14": (1024, 50_000),
    "vitc_l_patch1_14": (1024, 50_000),
}


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="simple_vit_ti_patch16_224"))
  name = options["model"]
  if name not in SIZES:
    raise UserError(f"unknown B-cos ViT {name!r}; valid: {', '.join(SIZES)}")
  batch_size, warmup_steps = SIZES[name]
  return vit_final(name, batch_size=batch_size, warmup_steps=warmup_steps)
