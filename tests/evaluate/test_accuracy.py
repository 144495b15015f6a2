"""Accuracy: top-k, and one sharded evaluation over a whole split, padding excluded."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bcos_jax import data, models
from bcos_jax.evaluate import accuracy


def test_topk_correct():
  logits = jnp.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.1]])
  top1 = accuracy.topk_correct(logits, jnp.array([2, 0]), 1)
  top2 = accuracy.topk_correct(logits, jnp.array([2, 1]), 2)
  chex.assert_trees_all_close(top1, jnp.array([0.0, 1.0]))
  chex.assert_trees_all_close(top2, jnp.array([1.0, 1.0]))


def test_classify_covers_every_record_once_over_eight_devices():
  """45 records in global batches of 16 split over 8 devices: 3 batches, 3 padded rows
  dropped, each record's outputs those of the model on it alone."""
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 256, (32, 32, 3)).astype(np.uint8), "label": i % 10}
             for i in range(45)]
  source = data.Source(records, 10, "random", "test")
  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=(4,) * 8)
  results = accuracy.classify(model, source, lambda record: record, batch_size=16)
  chex.assert_shape([results.label, results.top_logit, results.predicted, results.top1], (45,))
  assert results.loss is None and set(results.metrics()) == {"eval/top1", "eval/top5",
                                                             "eval/count"}
  np.testing.assert_array_equal(results.label, np.arange(45) % 10)
  images = np.stack([r["image"] for r in records])
  logits = models.eval_mode(model)(models.input_transform(model)(images))
  chex.assert_trees_all_close(results.top_logit, np.asarray(logits.max(-1)), rtol=1e-5)
  np.testing.assert_array_equal(results.predicted, np.asarray(logits.argmax(-1)))
  assert results.metrics()["eval/top1"] == pytest.approx(float(np.mean(results.correct)))
