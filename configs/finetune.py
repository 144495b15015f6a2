"""Transfer learning: a pretrained B-cos model on your own images, with a new head.

    # once: ROOT/train/<class>/*.jpg and ROOT/validation/<class>/*.jpg -> a dataset
    python launch/prepare_data.py --image_folder=ROOT --name=my_images
    # train only a new head on the frozen pretrained network
    python -m bcos_jax.main --config=configs/finetune.py:mode=linear_probe \\
        --config.init_from=pretrained:resnet50 --config.dataset=my_images --workdir=DIR
    # or fine-tune all of it (the backbone at a tenth of the head's rate)
    python -m bcos_jax.main --config=configs/finetune.py \\
        --config.init_from=pretrained:resnet50 --config.dataset=my_images --workdir=DIR

The architecture is init_from's (`config.model.name` stays empty): any name
of `bcos_jax.models.pretrained` (`pretrained:densenet121`,
`pretrained:simple_vit_b_patch16_224`, ...), a saved model or a training
workdir. Its classifier head is initialised afresh for the data set's classes
(`config.finetune.new_head`), with the logit bias -log(C - 1) of the v2
recipe; the checkpoints record the new `num_classes`, so `models.load(DIR)`
and `python -m bcos_jax.evaluate --workdir=DIR` open the new model.

Recipe: the pretrained models' input, the bcos_final data recipe
(RandomResizedCrop 224 and flips; evaluation resize 256, centre crop 224);
Adam, 1 warm-up epoch from 1% of the peak, then cosine, 10 epochs, batch 64,
BCE on one-hot targets, adaptive gradient clipping as the v2 recipes.
Variants: mode=full (the default: every parameter trains, the head at 1e-3
and the backbone at `config.finetune.backbone_lr_factor` = 0.1 of it, the
norm layers in training mode) and mode=linear_probe (only the head trains,
at 1e-3; the backbone's parameters and BatchNorm statistics stay bit for
bit, its norm layers use their running statistics, and no gradient is
computed through it). A data set with an eval split of another name:
`--config.eval_split=test`; a run on part of the classes: `--config.classes=(0,2,5)`.
Hardware: one GPU with 16 GB (ResNet-50 at batch 64; lower
`--config.batch_size` for less memory). A linear probe costs a forward pass
of the backbone per image, full fine-tuning about three; on CPU only tiny
data sets are practical.
Expected result: the step-0 evaluation is at chance (the head is new); a
linear probe reaches most of its accuracy within the first epochs, full
fine-tuning goes further when the images differ from ImageNet's.
`launch/transfer_digits.py` measures both against training from scratch at
small scale (README, "Pretrained models and your own images"). If the loss
goes NaN (the run stops at that step, keeping the last good checkpoint),
lower `--config.optimizer.learning_rate` (and in mode=full
`--config.finetune.backbone_lr_factor`) by 10× and start again.
"""

from ml_collections import ConfigDict

from bcos_jax.errors import UserError
from bcos_jax.train.config_schema import defaults, parse_variant
from bcos_jax.train.init_from import MODES


def get_config(arg: str | None = None) -> ConfigDict:
  options = parse_variant(arg, dict(mode="full"))
  mode = options["mode"]
  if mode not in MODES:
    raise UserError(f"unknown fine-tuning mode {mode!r}; valid: {', '.join(MODES)}")
  config = defaults()
  config.model.name = ""  # init_from's architecture
  config.finetune.new_head = True
  config.finetune.mode = mode
  if mode == "full":
    config.finetune.backbone_lr_factor = 0.1
  config.dataset = ""  # --config.dataset=my_images (launch/prepare_data.py --image_folder)
  config.eval_split = "validation"
  config.recipe = "bcos_final"
  config.batch_size = 64
  config.num_epochs = 10
  config.optimizer.schedule = "cosine"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_epochs = 1
  config.optimizer.warmup_start_factor = 0.01
  config.optimizer.agc_clip_factor = 0.01
  config.loss.name = "bce"
  config.worker_count = 8  # JPEG decoding at 224 needs them; fewer on a small machine
  config.eval_worker_count = 4
  # The data set's size is not known here: evaluations and checkpoints by steps, and at the end.
  config.log_every = 50
  config.eval_every = config.checkpoint_every = 500
  config.keep_checkpoints = 2
  return config
