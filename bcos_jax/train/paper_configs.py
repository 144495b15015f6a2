"""The papers' training recipes as config builders, shared by the files in configs/.

Each returns a complete config (`config_schema.defaults()` changed where the
recipe differs); a configs/*.py file picks one, passes the model and its
variant options as keyword arguments, and documents the command, hardware,
time and expected result. Config files do not change a built config: the
fields derived from the batch size and the schedule (evaluation, checkpoint
and log spacing, the EMA decay) are set by `_derive`, which every builder
calls last, after every option has been applied.
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import defaults

IMAGENET_TRAIN_IMAGES = 1_281_167
CIFAR10_TRAIN_IMAGES = 50_000

# torchvision's reference EMA (which the official v2 long recipe follows):
# decay 0.99998 per image and epoch, applied every 32 optimiser updates.
TORCHVISION_EMA_DECAY = 0.99998
TORCHVISION_EMA_EVERY = 32


def _model(config: ConfigDict, name: str, overrides: dict) -> None:
  config.model.name = name
  config.model.overrides = ConfigDict(overrides)


def torchvision_ema_decay(effective_batch: int, num_epochs: float) -> float:
  """torchvision's EMA decay, as a decay per optimiser update.

  torchvision updates the average every 32 optimiser updates with
  alpha = min(1, (1 - 0.99998) · effective_batch · 32 / epochs), i.e. decay
  1 - alpha; the same average updated every update has decay
  (1 - alpha) ** (1 / 32). `effective_batch` is the batch of one optimiser
  update (per-step batch × accumulate_steps), so the value does not depend on
  how the update's batch is split into steps.
  """
  alpha = min(1.0, (1 - TORCHVISION_EMA_DECAY) * effective_batch * TORCHVISION_EMA_EVERY
              / num_epochs)
  return (1 - alpha) ** (1 / TORCHVISION_EMA_EVERY)


def _derive(config: ConfigDict, train_images: int, *, ema: bool = False) -> ConfigDict:
  """Sets the fields that follow from the batch size and the schedule; returns `config`.

  Evaluation and checkpoints every epoch (train_images // batch_size steps,
  batch_size being the per-step batch), logs every min(100, that) steps, and
  with `ema` the torchvision EMA decay per optimiser update (see
  `torchvision_ema_decay`) for the effective batch and `config.num_epochs`.
  """
  steps_per_epoch = max(train_images // config.batch_size, 1)
  config.eval_every = steps_per_epoch
  config.checkpoint_every = steps_per_epoch
  config.log_every = min(100, steps_per_epoch)
  if ema:
    config.ema_decay = torchvision_ema_decay(config.batch_size * config.accumulate_steps,
                                             config.num_epochs)
  return config


def cifar10(model: str, **model_overrides) -> ConfigDict:
  """CIFAR-10 (v1 Sec. C.1.1; v2 CIFAR ResNets): Adam 1e-3, batch 64, 100 epochs, cosine."""
  config = defaults()
  _model(config, model, model_overrides)
  config.dataset = "cifar10"
  config.recipe = "cifar10"
  config.batch_size = 64
  config.num_epochs = 100
  config.optimizer.schedule = "cosine"
  config.optimizer.learning_rate = 1e-3
  config.worker_count = 2
  return _derive(config, CIFAR10_TRAIN_IMAGES)


def imagenet_v1(model: str, *, recipe: str = "imagenet_v1", training_plus: bool = False,
                **model_overrides) -> ConfigDict:
  """ImageNet, v1 (Sec. C.1.2): Adam 2.5e-4, batch 256, 100 epochs, lr ÷ 10 at epoch 60.

  `training_plus` is the v1 paper's longer `training+` schedule: batch 128,
  200 epochs, 5 linear warm-up epochs, then cosine. The models carry the v1
  logit bias log(0.01 / 0.99) and temperature.
  """
  config = defaults()
  _model(config, model, model_overrides)
  config.dataset = "imagenet2012"
  config.eval_split = "validation"
  config.recipe = recipe
  config.optimizer.learning_rate = 2.5e-4
  config.worker_count = 16
  if training_plus:
    config.batch_size = 128
    config.num_epochs = 200
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 5
  else:
    config.batch_size = 256
    config.num_epochs = 100
    config.optimizer.schedule = "step"
    config.optimizer.decay_epochs = (60,)
    config.optimizer.decay_factor = 0.1
  return _derive(config, IMAGENET_TRAIN_IMAGES)


def _bcos_final_base(model: str, model_overrides: dict, num_epochs: float) -> ConfigDict:
  """The v2 `bcos_final` fields, without the derived ones."""
  config = defaults()
  _model(config, model, model_overrides)
  config.dataset = "imagenet2012"
  config.eval_split = "validation"
  config.recipe = "bcos_final"
  config.batch_size = 256
  config.num_epochs = num_epochs
  config.optimizer.schedule = "cosine"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_epochs = 5
  config.optimizer.warmup_start_factor = 0.01
  # timm's clip factor (the official trainer applies AGC with its default).
  config.optimizer.agc_clip_factor = 0.01
  config.loss.name = "uniform_off_label_bce"
  config.worker_count = 16
  return config


def bcos_final(model: str, *, num_epochs: float = 90, **model_overrides) -> ConfigDict:
  """ImageNet, v2 `bcos_final`: Adam 1e-3, batch 256, `num_epochs` epochs (90; the official
  runs use 100 for resnext50_32x4d), cosine after 5 linear warm-up epochs from 1% of the
  peak, uniform-off-label BCE, adaptive gradient clipping."""
  return _derive(_bcos_final_base(model, model_overrides, num_epochs), IMAGENET_TRAIN_IMAGES)


def bcos_final_long(model: str, *, accumulate_steps: int = 1, **model_overrides) -> ConfigDict:
  """ImageNet, v2 `bcos_final_long`: as bcos_final, batch 1024, 600 epochs, crop 176 with
  TrivialAugmentWide and random erasing, mixup 0.2 / cutmix 1.0, parameter EMA.

  `accumulate_steps=k` splits each optimiser update's batch of 1024 into k
  steps of 1024 // k (the official runs use 2 for resnet152 and ConvNeXt-Base);
  the effective batch, the schedule and the EMA decay per update stay the same.

  Raises:
    ValueError: if `accumulate_steps` is not a positive divisor of 1024.
  """
  effective_batch = 1024
  if accumulate_steps < 1 or effective_batch % accumulate_steps:
    raise UserError(f"accumulate_steps must be a positive divisor of {effective_batch}, "
                     f"got {accumulate_steps}")
  config = _bcos_final_base(model, model_overrides, num_epochs=600)
  config.recipe = "bcos_final_long"
  config.batch_size = effective_batch // accumulate_steps
  config.accumulate_steps = accumulate_steps
  config.mixing.mixup_alpha = 0.2
  config.mixing.cutmix_alpha = 1.0
  # The official EMA (torchvision's reference recipe), as a decay per
  # optimiser update for the effective batch of 1024: see torchvision_ema_decay.
  return _derive(config, IMAGENET_TRAIN_IMAGES, ema=True)


def vit_final(model: str, *, batch_size: int, warmup_steps: int,
              **model_overrides) -> ConfigDict:
  """ImageNet, v2 `vit_final` (B-cos ViTs): Adam 1e-3, batch `batch_size`, 90 epochs,
  cosine after a linear warm-up of `warmup_steps` steps, RandAugment(2, 10), mixup 0.2,
  AGC, off-label BCE (the official sizes: configs/vit_final.py)."""
  config = _bcos_final_base(model, model_overrides, num_epochs=90)
  config.recipe = "vit"
  config.batch_size = batch_size
  config.optimizer.warmup_epochs = 0
  config.optimizer.warmup_steps = warmup_steps
  config.mixing.mixup_alpha = 0.2
  return _derive(config, IMAGENET_TRAIN_IMAGES)


def bcosification(model: str, **model_overrides) -> ConfigDict:
  """ImageNet, B-cosification (Arya et al., NeurIPS 2024, `experiments/ImageNet/bcosification`):
  fine-tunes a B-cosified torchvision network (`config.init_from`) with the bcos_final data
  recipe, Adam 1e-4 with cosine annealing over 90 epochs and no warm-up, batch 256,
  uniform-off-label BCE, adaptive gradient clipping."""
  config = _bcos_final_base(model, model_overrides, num_epochs=90)
  config.optimizer.learning_rate = 1e-4
  config.optimizer.warmup_epochs = 0
  config.optimizer.warmup_start_factor = 0.0
  return _derive(config, IMAGENET_TRAIN_IMAGES)
