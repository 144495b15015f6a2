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

from ml_collections import ConfigDict, config_dict


def get_config(arg: str | None = None) -> ConfigDict:
  options = dict(b="2", width="0.25")
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in options:
      raise ValueError(f"unknown variant option {key!r}; known: {sorted(options)}")
    options[key] = value
  width = float(options["width"])
  channels = tuple(max(4, int(c * width)) for c in (64, 64, 128, 128, 128, 256, 256, 256))

  config = ConfigDict()
  config.seed = 0
  config.model = ConfigDict({"name": f"v1_cifar9l_b{float(options['b']):g}",
                             "overrides": {"channels": channels}})
  config.dataset = "bcos_digits"
  config.data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.train_split = "train"
  config.eval_split = "test"
  config.recipe = "digits"
  config.batch_size = 64
  config.num_epochs = 10
  config.num_steps = config_dict.placeholder(int)  # None: num_epochs decides
  config.worker_count = 0
  config.optimizer = ConfigDict({"schedule": "cosine", "learning_rate": 1e-3,
                                 "warmup_epochs": 1,
                                 "grad_clip_norm": config_dict.placeholder(float)})
  steps_per_epoch = 1437 // config.batch_size
  config.log_every = steps_per_epoch
  config.eval_every = 2 * steps_per_epoch
  config.checkpoint_every = 2 * steps_per_epoch
  config.keep_checkpoints = 2
  config.num_explanations = 8
  config.num_devices = config_dict.placeholder(int)  # None: all devices
  config.distributed = False
  return config
