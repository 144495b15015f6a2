"""The fields a training config may have: a mistyped one fails at start, by name.

`ml_collections` locks a config against unknown overrides on the command
line; this also catches unknown fields written in a config file (which the
trainer would otherwise silently ignore).
"""

from ml_collections import ConfigDict

# Field -> None (a value) or the fields of a nested ConfigDict.
FIELDS = {
    "seed": None,
    "model": {"name": None, "overrides": "any"},
    "dataset": None, "data_dir": None, "train_split": None, "eval_split": None,
    "recipe": None,
    "mixing": {"mixup_alpha": None, "cutmix_alpha": None, "switch_prob": None},
    "batch_size": None, "num_epochs": None, "num_steps": None, "accumulate_steps": None,
    "worker_count": None, "eval_worker_count": None,
    "optimizer": {"schedule": None, "learning_rate": None, "warmup_epochs": None,
                  "warmup_steps": None, "decay_epochs": None, "decay_factor": None,
                  "grad_clip_norm": None, "agc_clip_factor": None},
    "loss": {"name": None, "aux_weight": None},
    "ema_decay": None, "compute_dtype": None, "fsdp": None,
    "log_every": None, "eval_every": None, "checkpoint_every": None, "keep_checkpoints": None,
    "num_explanations": None, "num_devices": None, "distributed": None,
    "progress_bar": None, "tensorboard": None,
}


def _check(config: ConfigDict, fields: dict, prefix: str) -> None:
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in fields:
      raise ValueError(f"unknown config field {name!r}; the fields of "
                       f"{prefix.rstrip('.') or 'the config'} are: {', '.join(sorted(fields))}")
    nested = fields[key]
    if isinstance(nested, dict):
      value = config[key]
      if not isinstance(value, ConfigDict):
        raise ValueError(f"config field {name!r} must be a ConfigDict with fields "
                         f"{', '.join(sorted(nested))}")
      _check(value, nested, f"{name}.")


def validate(config: ConfigDict) -> None:
  """Raises ValueError naming the first field the trainer does not know."""
  _check(config, FIELDS, "")
