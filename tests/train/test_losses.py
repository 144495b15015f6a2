"""The training losses against hand computations."""

import chex
import numpy as np
import pytest

from bcos_jax.train import losses


def _bce(logits, targets):
  p = 1 / (1 + np.exp(-logits))
  return float(np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p))))


def test_bce_on_one_hot_targets():
  logits = np.array([[0.5, -1.0, 2.0], [0.0, 1.0, -2.0]], np.float32)
  targets = np.eye(3, dtype=np.float32)[[2, 0]]
  chex.assert_trees_all_close(losses.bce(logits, targets), _bce(logits, targets), rtol=1e-6)


def test_uniform_off_label_bce_raises_off_targets_to_one_over_c():
  logits = np.array([[0.5, -1.0, 2.0, 0.1, -0.3]], np.float32)
  one_hot = np.eye(5, dtype=np.float32)[[3]]
  expected = _bce(logits, np.array([[0.2, 0.2, 0.2, 1.0, 0.2]]))
  chex.assert_trees_all_close(losses.uniform_off_label_bce(logits, one_hot), expected,
                              rtol=1e-6)
  chex.assert_trees_all_close(losses.uniform_off_label_bce(logits, one_hot, off_label=0.05),
                              _bce(logits, np.maximum(one_hot, 0.05)), rtol=1e-6)


def test_softmax_cross_entropy_on_one_hot_and_soft_targets():
  logits = np.array([[0.5, -1.0, 2.0], [0.0, 1.0, -2.0]], np.float64)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  one_hot = np.eye(3)[[2, 0]]
  expected = float(np.mean(-(one_hot * log_p).sum(axis=1)))
  chex.assert_trees_all_close(losses.softmax_cross_entropy(logits.astype(np.float32),
                                                           one_hot.astype(np.float32)),
                              expected, rtol=1e-6)
  soft = np.array([[0.7, 0.0, 0.3], [0.5, 0.5, 0.0]])
  chex.assert_trees_all_close(losses.softmax_cross_entropy(logits.astype(np.float32),
                                                           soft.astype(np.float32)),
                              float(np.mean(-(soft * log_p).sum(axis=1))), rtol=1e-6)
  # Stable for large logits (no overflow in the exponentials), and shift-invariant.
  big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
  assert float(losses.softmax_cross_entropy(big, np.eye(3, dtype=np.float32)[[0]])) == 0.0
  chex.assert_trees_all_close(losses.softmax_cross_entropy(big, np.eye(3, dtype=np.float32)[[1]]),
                              1000.0, rtol=1e-6)
  chex.assert_trees_all_close(losses.softmax_cross_entropy(logits + 50.0, one_hot), expected,
                              rtol=1e-5)
  assert losses.get_loss("softmax_cross_entropy") is losses.softmax_cross_entropy


def test_unknown_loss_lists_the_known_ones():
  assert losses.get_loss("bce") is losses.bce
  with pytest.raises(ValueError, match="uniform_off_label_bce"):
    losses.get_loss("focal")
