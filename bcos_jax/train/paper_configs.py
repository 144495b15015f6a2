"""The papers' training recipes as config builders, shared by the files in configs/.

Each returns a complete config (`config_schema.defaults()` changed where the
recipe differs); a configs/*.py file picks one, sets the model and its
variants, and documents the command, hardware, time and expected result.
"""

from ml_collections import ConfigDict

from bcos_jax.train.config_schema import defaults

IMAGENET_TRAIN_IMAGES = 1_281_167


def _model(config: ConfigDict, name: str, **overrides) -> None:
  config.model.name = name
  config.model.overrides = ConfigDict(overrides)


def _every_epoch(config: ConfigDict, train_images: int) -> None:
  steps_per_epoch = max(train_images // config.batch_size, 1)
  config.eval_every = steps_per_epoch
  config.checkpoint_every = steps_per_epoch
  config.log_every = min(100, steps_per_epoch)


def cifar10(model: str, **overrides) -> ConfigDict:
  """CIFAR-10 (v1 Sec. C.1.1; v2 CIFAR ResNets): Adam 1e-3, batch 64, 100 epochs, cosine."""
  config = defaults()
  _model(config, model, **overrides)
  config.dataset = "cifar10"
  config.recipe = "cifar10"
  config.batch_size = 64
  config.num_epochs = 100
  config.optimizer.schedule = "cosine"
  config.optimizer.learning_rate = 1e-3
  config.worker_count = 2
  _every_epoch(config, 50_000)
  return config


def imagenet_v1(model: str, recipe: str = "imagenet_v1", **overrides) -> ConfigDict:
  """ImageNet, v1 (Sec. C.1.2): Adam 2.5e-4, batch 256, 100 epochs, lr ÷ 10 at epoch 60.

  The models carry the v1 logit bias log(0.01 / 0.99) and temperature.
  """
  config = defaults()
  _model(config, model, **overrides)
  config.dataset = "imagenet2012"
  config.eval_split = "validation"
  config.recipe = recipe
  config.batch_size = 256
  config.num_epochs = 100
  config.optimizer.schedule = "step"
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.decay_epochs = (60,)
  config.optimizer.decay_factor = 0.1
  config.worker_count = 16
  _every_epoch(config, IMAGENET_TRAIN_IMAGES)
  return config


def bcos_final(model: str, **overrides) -> ConfigDict:
  """ImageNet, v2 `bcos_final`: Adam 1e-3, batch 256, 90 epochs, cosine after 5 linear
  warm-up epochs from 1% of the peak, uniform-off-label BCE, adaptive gradient clipping."""
  config = defaults()
  _model(config, model, **overrides)
  config.dataset = "imagenet2012"
  config.eval_split = "validation"
  config.recipe = "bcos_final"
  config.batch_size = 256
  config.num_epochs = 90
  config.optimizer.schedule = "cosine"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_epochs = 5
  config.optimizer.warmup_start_factor = 0.01
  # timm's clip factor (the official trainer applies AGC with its default).
  config.optimizer.agc_clip_factor = 0.01
  config.loss.name = "uniform_off_label_bce"
  config.worker_count = 16
  _every_epoch(config, IMAGENET_TRAIN_IMAGES)
  return config


def bcos_final_long(model: str, **overrides) -> ConfigDict:
  """ImageNet, v2 `bcos_final_long`: as bcos_final, batch 1024, 600 epochs, crop 176 with
  TrivialAugmentWide and random erasing, mixup 0.2 / cutmix 1.0, parameter EMA."""
  config = bcos_final(model, **overrides)
  config.recipe = "bcos_final_long"
  config.batch_size = 1024
  config.num_epochs = 600
  config.mixing.mixup_alpha = 0.2
  config.mixing.cutmix_alpha = 1.0
  # The official EMA (torchvision's reference recipe): every 32 steps, with the
  # decay 0.99998 adjusted to the batch and epochs, 1 - (1 - 0.99998)·batch·32/epochs;
  # here the same average is updated every step.
  per_update = 1 - (1 - 0.99998) * config.batch_size * 32 / config.num_epochs
  config.ema_decay = per_update ** (1 / 32)
  _every_epoch(config, IMAGENET_TRAIN_IMAGES)
  return config


def vit_final(model: str, batch_size: int = 2048, warmup_steps: int = 10_000,
              **overrides) -> ConfigDict:
  """ImageNet, v2 `vit_final` (B-cos ViTs): Adam 1e-3, 90 epochs, cosine after a linear
  warm-up of `warmup_steps` steps, RandAugment(2, 10), mixup 0.2, AGC, off-label BCE."""
  config = bcos_final(model, **overrides)
  config.recipe = "vit"
  config.batch_size = batch_size
  config.optimizer.warmup_epochs = 0
  config.optimizer.warmup_steps = warmup_steps
  config.mixing.mixup_alpha = 0.2
  _every_epoch(config, IMAGENET_TRAIN_IMAGES)
  return config

