"""Losses: binary cross-entropy on one-hot (or soft) targets, as the B-cos papers train;
softmax cross-entropy for the conventional networks that B-cosification starts from."""

import jax
import jax.numpy as jnp
import optax

from bcos_jax.errors import UserError


def bce_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """(N,) binary cross-entropy averaged over classes.

  Args:
    logits: (N, C); the model's logit bias and temperature are already in them.
    targets: (N, C) in [0, 1] (one-hot or mixed).
  """
  return optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)


def bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean binary cross-entropy over classes and examples (the training loss)."""
  return bce_per_example(logits, targets).mean()


def targets_from_labels(labels: jax.Array, num_classes: int) -> jax.Array:
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def bce_of_labels(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """(N,) binary cross-entropy against one-hot targets of integer labels (evaluation)."""
  return bce_per_example(logits, targets_from_labels(labels, logits.shape[-1]))


def uniform_off_label_bce(logits: jax.Array, targets: jax.Array,
                          off_label: float | None = None) -> jax.Array:
  """The v2 recipes' BCE with off-label targets raised to `off_label` (default 1/C).

  With C = 5 and label 3 the targets are [0.2, 0.2, 0.2, 1, 0.2]; soft
  (mixed) targets are raised to at least the off value in the same way.
  """
  floor = off_label or 1.0 / logits.shape[-1]
  return bce(logits, jnp.maximum(targets, floor))


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy against (N, C) targets (one-hot or mixed, rows summing to 1):
  how torchvision's conventional networks are trained."""
  return optax.softmax_cross_entropy(logits, targets).mean()


LOSSES = {"bce": bce, "uniform_off_label_bce": uniform_off_label_bce,
          "softmax_cross_entropy": softmax_cross_entropy}


def get_loss(name: str):
  """A training loss `(logits (N, C), targets (N, C)) -> scalar` by config name."""
  if name not in LOSSES:
    raise UserError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
  return LOSSES[name]
