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


def test_unknown_loss_lists_the_known_ones():
  assert losses.get_loss("bce") is losses.bce
  with pytest.raises(ValueError, match="uniform_off_label_bce"):
    losses.get_loss("focal")
