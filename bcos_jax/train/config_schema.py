"""Every field a training config may have, with its default; a mistyped one fails at start.

Config files start from `defaults()` and change what their recipe needs, so
each file shows only its differences. `ml_collections` locks a config
against unknown overrides on the command line; `complete` also catches
unknown fields written in a config file, which the trainer would otherwise
silently ignore, and fills the fields a hand-built config leaves out from
`defaults()`, so the trainer reads every field by attribute and the defaults
live here only.
"""

from ml_collections import ConfigDict, config_dict

from bcos_jax.errors import UserError


def defaults() -> ConfigDict:
  """A config with every field the trainer reads, at its default."""
  config = ConfigDict()
  config.seed = 0
  config.model = ConfigDict({"name": "", "overrides": ConfigDict()})  # registry name, options
  # Fine-tuning: a directory bcos_jax.models.load opens (a saved model, or a training workdir:
  # its newest checkpoint, the parameter average when that run kept one) whose parameters and
  # batch statistics replace the random initialisation; the optimiser starts afresh. An empty
  # model.name takes its architecture. A checkpoint in the workdir resumes instead.
  config.init_from = config_dict.placeholder(str)
  # What fine-tuning trains (configs/finetune.py); the defaults train everything at one rate.
  config.finetune = ConfigDict({
      # A new classifier head (randomly initialised) for the data set's classes, its logit bias
      # set for their number (train/init_from.py); every other variable comes from init_from.
      # Without it, a data set with another number of classes than init_from's is refused.
      "new_head": False,
      # full: every parameter trains (the backbone at backbone_lr_factor × the rate);
      # linear_probe: only the head trains, the backbone's norm layers use (and keep) their
      # running statistics.
      "mode": "full",
      "backbone_lr_factor": 1.0,  # mode=full: the backbone's rate / the head's (1: one rate)
  })
  config.dataset = ""  # a tfds name, or bcos_digits
  # Train and evaluate on these labels only, relabelled 0..k-1 in this order (names kept); ()
  # = every class.
  config.classes = ()
  config.data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.train_split = "train"
  config.eval_split = "test"
  config.recipe = ""  # a bcos_jax.data.RECIPES name
  # The recipe's photometric ops (v1: ColorJitter, PCA lighting) in the train step instead of
  # the host workers, with the same draws (bcos_jax.data.photometric): for a host that cannot
  # feed its accelerators.
  config.photometric_on_device = False
  # Recompute the model's blocks in the backward pass instead of storing their activations
  # (the DenseNet, ResNet, ConvNeXt and ViT builders' `remat`, bcos_jax.nn.remat): less
  # memory for about one more forward pass. The trainer builds the model with it.
  config.remat = False
  # Batch transforms (v2 long recipes): mixup 0.2 / cutmix 1.0; 0 disables.
  config.mixing = ConfigDict({"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "switch_prob": 0.5})
  config.batch_size = 64  # global, over all processes and devices
  config.num_epochs = 1.0
  config.num_steps = config_dict.placeholder(int)  # None: num_epochs decides
  config.accumulate_steps = 1  # batches per optimiser update (a virtual batch)
  config.worker_count = 0  # grain worker processes for training data
  config.eval_worker_count = 0
  config.optimizer = ConfigDict({
      "schedule": "cosine",  # constant | cosine | step
      "learning_rate": 1e-3,
      "warmup_epochs": 0.0,
      "warmup_steps": config_dict.placeholder(int),  # overrides warmup_epochs (vit_final)
      "warmup_start_factor": 0.0,  # the warm-up starts at this fraction of the peak
      "decay_epochs": (),  # step schedule: epochs at which lr *= decay_factor
      "decay_factor": 0.1,
      "grad_clip_norm": config_dict.placeholder(float),
      "agc_clip_factor": config_dict.placeholder(float),  # adaptive gradient clipping (v2)
  })
  config.loss = ConfigDict({"name": "bce", "aux_weight": 0.0})
  # Decay of the parameter EMA per optimiser update (once per accumulate_steps
  # steps); None: no EMA.
  config.ema_decay = config_dict.placeholder(float)
  config.compute_dtype = "float32"  # or bfloat16 (parameters stay float32)
  config.fsdp = 1  # devices that share (shard) the parameters
  config.log_every = 50
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  config.num_explanations = 8  # test images explained (PNG) at every evaluation
  config.num_devices = config_dict.placeholder(int)  # None: all devices
  config.distributed = False  # jax.distributed.initialize() (several processes)
  config.progress_bar = True
  config.tensorboard = True
  return config


def parse_variant(arg: str | None, options: dict[str, str]) -> dict[str, str]:
  """`key=value,key=value` (the part after ':' in --config) over `options`' defaults.

  Raises:
    ValueError: naming an unknown key and the known ones.
  """
  options = dict(options)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in options:
      raise UserError(f"unknown variant option {key!r}; known: {sorted(options)}")
    options[key] = value
  return options


def _check(config: ConfigDict, reference: ConfigDict, prefix: str) -> None:
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in reference:
      raise UserError(f"unknown config field {name!r}; the fields of "
                       f"{prefix.rstrip('.') or 'the config'} are: "
                       f"{', '.join(sorted(reference.keys()))}")
    expected = reference[key]
    if isinstance(expected, ConfigDict) and name != "model.overrides":
      value = config[key]
      if not isinstance(value, ConfigDict):
        raise UserError(f"config field {name!r} must be a ConfigDict with fields "
                         f"{', '.join(sorted(expected.keys()))}")
      _check(value, expected, f"{name}.")


def validate(config: ConfigDict) -> None:
  """Raises ValueError naming the first field the trainer does not know."""
  _check(config, defaults(), "")


def _merge(into: ConfigDict, changes: ConfigDict, prefix: str) -> None:
  for key in changes.keys():
    name = f"{prefix}{key}"
    value = changes[key]
    if isinstance(into[key], ConfigDict) and name != "model.overrides":
      _merge(into[key], value, f"{name}.")
      continue
    try:
      into[key] = value
    except TypeError as error:
      raise UserError(f"config field {name!r}: {error}") from error


def complete(config: ConfigDict) -> ConfigDict:
  """`config` over `defaults()`: every field the trainer reads, each with a value.

  Raises:
    ValueError: naming an unknown field, or a value of the wrong type.
  """
  validate(config)
  full = defaults()
  _merge(full, config, "")
  return full
