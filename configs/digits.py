"""The embedded default: a B-cos network on scikit-learn's digits, on a laptop CPU.

    python -m bcos_jax.main --config=configs/digits.py --workdir=/tmp/bcos_digits

Hardware: 2 CPU cores (no accelerator needed). Expected time: under 5 minutes.
Expected result: >= 95% test accuracy (eval/top1 in WORKDIR/metrics.jsonl)
and colour explanations of 8 test digits in WORKDIR/explanations/.

The model is the paper's 9-layer CIFAR-10 B-cos network (B=2, MaxOut 2, the
v1 layer scale and logit temperature) at a quarter of the width, on 32×32
RGB versions of the 1,797 8×8 digits (1,437 train / 360 test). Variants:
`:b=1.5` changes B (with that B's scale and temperature), `:width=1` is full width.
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import defaults, parse_variant


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(b="2", width="0.25"))
  width = float(options["width"])
  widths = tuple(max(4, int(c * width)) for c in (64, 64, 128, 128, 128, 256, 256, 256))

  config = defaults()
  config.model.name = f"v1_cifar9l_b{float(options['b']):g}"
  config.model.overrides = ConfigDict({"widths": widths})
  config.dataset = "bcos_digits"
  config.recipe = "digits"
  config.batch_size = 64
  config.num_epochs = 10
  config.optimizer.schedule = "cosine"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_epochs = 1
  steps_per_epoch = 1437 // config.batch_size
  config.log_every = steps_per_epoch
  config.eval_every = 2 * steps_per_epoch
  config.checkpoint_every = 2 * steps_per_epoch
  config.keep_checkpoints = 2
  return config
