"""Losses: binary cross-entropy on one-hot (or soft) targets, as the B-cos papers train."""

import jax
import jax.numpy as jnp
import optax


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


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(N,) 1.0 where the label is among the k largest logits."""
  top = jax.lax.top_k(logits, k)[1]
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
