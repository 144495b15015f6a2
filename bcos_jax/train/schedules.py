"""Learning-rate schedules of the official recipes, as optax schedules."""

import optax
from ml_collections import ConfigDict

from bcos_jax.errors import UserError


def make_schedule(config: ConfigDict, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """Builds `config.schedule`: "constant", "cosine" (with linear warm-up) or "step".

  Fields: learning_rate, warmup_epochs (or warmup_steps), warmup_start_factor
  (the warm-up starts at that fraction of the peak: 0.01 in the v2 recipes),
  and for "step" decay_epochs (a list) and decay_factor (v1 ImageNet: lr ÷ 10
  at epoch 60).
  """
  peak = config.learning_rate
  warmup = config.get("warmup_steps")
  if warmup is None:
    warmup = int(config.get("warmup_epochs", 0) * steps_per_epoch)
  name = config.schedule
  if name == "constant":
    main = optax.constant_schedule(peak)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
  elif name == "step":
    boundaries = {int(e * steps_per_epoch) - warmup: config.decay_factor
                  for e in config.decay_epochs}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  else:
    raise UserError(f"unknown schedule {name!r}; known: constant, cosine, step")
  if warmup == 0:
    return main
  start = peak * config.get("warmup_start_factor", 0.0)
  return optax.join_schedules([optax.linear_schedule(start, peak, warmup), main], [warmup])
