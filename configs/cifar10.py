"""CIFAR-10: the v1 paper's 9-layer B-cos network for every B of Tab. 1, and the v2 ResNets.

    python launch/prepare_data.py --dataset=cifar10     # once (downloads)
    python -m bcos_jax.main --config=configs/cifar10.py --workdir=/tmp/cifar10_b2
    python -m bcos_jax.main --config=configs/cifar10.py:b=1.25 --workdir=...
    python -m bcos_jax.main --config=configs/cifar10.py:plain=1 --workdir=...   # no MaxOut
    python -m bcos_jax.main --config=configs/cifar10.py:model=resnet20 --workdir=...

Recipe (v1 Sec. C.1.1, the official code): Adam 1e-3, batch 64, 100 epochs,
cosine schedule, BCE with the model's logit bias log(0.1/0.9) (9-layer net)
or -log(9) (ResNets); random crop 32 with 4-pixel padding and flips.
Variants: b in {1, 1.25, 1.5, 1.75, 2, 2.25, 2.5} (each with its layer scale
and logit temperature), plain=1 (MaxOut off; for the 9-layer net at b=2
only), model in {cifar9l, resnet20, resnet32, resnet44, resnet56} (the v2
CIFAR ResNets as the official norm ablation trains them: no norm layers,
MaxOut 2; norm=<official norm name> adds one, e.g.
norm=NoBias(BatchNormUncentered2d)).
Hardware: one GPU (about 1 hour for the 9-layer net; on 2 CPU cores ~1.5 s
per step, too slow). Expected result: the test accuracies of the v1 paper's
Tab. 1 for the 9-layer net (accuracy falls slowly as B grows).
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import parse_variant
from bcos_jax.train.paper_configs import cifar10

# Every 9-layer net (registry name): one per B of the v1 paper's Tab. 1, and
# the MaxOut-free one at B=2.
CIFAR9L = ("v1_cifar9l_b1", "v1_cifar9l_b1.25", "v1_cifar9l_b1.5", "v1_cifar9l_b1.75",
           "v1_cifar9l_b2", "v1_cifar9l_b2.25", "v1_cifar9l_b2.5", "v1_cifar9l_plain_b2")


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(model="cifar9l", b="2", plain="0", norm=""))
  if options["model"] == "cifar9l":
    b = float(options["b"])
    plain = options["plain"] == "1"
    name = f"v1_cifar9l{'_plain' if plain else ''}_b{b:g}"
    if name not in CIFAR9L:
      raise UserError(f"no 9-layer net for b={options['b']}, plain={options['plain']} "
                       f"({name!r}); valid: {', '.join(CIFAR9L)}")
    return cifar10(name)
  depths = ("resnet20", "resnet32", "resnet44", "resnet56")
  if options["model"] not in depths:
    raise UserError(f"unknown model {options['model']!r}; known: cifar9l, {', '.join(depths)}")
  return cifar10(f"cifar10_{options['model']}", b=float(options["b"]),
                 max_out=1 if options["plain"] == "1" else 2, norm=options["norm"])
