"""top_activating: the true top k of a unit over a whole source, sharded over 8 devices."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

from bcos_jax import data, models
from bcos_jax import explain as bx
from bcos_jax.errors import UserError

LAYER, CHANNEL = "layers.4", 3


@pytest.fixture(scope="module")
def model():
  return models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=(8, 8, 16, 16, 16, 16, 16, 16))


def _brute_force(model, records) -> np.ndarray:
  """The unit's activation on each record alone."""
  encode = models.input_transform(model)
  return np.array([float(bx.explain_unit(model, encode(jnp.asarray(r["image"][None])), LAYER,
                                         CHANNEL).logits[0]) for r in records])


@pytest.fixture(scope="module")
def source(model):
  """30 random images, then three copies of the most exciting one (ties at indices 30-32)."""
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 256, (16, 16, 3)).astype(np.uint8), "label": i % 10}
             for i in range(30)]
  best = int(np.argmax(_brute_force(model, records)))
  records += [dict(records[best]) for _ in range(3)]
  return data.Source(records, 10, "random", "test")


def test_top_activating_is_the_brute_force_top_k(model, source):
  # 33 records in batches of 16 over 8 devices: three batches, the last padded.
  result = bx.top_activating(model, source, lambda record: record, LAYER, CHANNEL, k=6,
                             batch_size=16)
  activations = _brute_force(model, source.records)
  # Highest first; equal activations (the copies) by index.
  expected = sorted(range(len(source)), key=lambda i: (-activations[i], i))[:6]
  np.testing.assert_array_equal(result.indices, expected)
  assert list(result.indices[1:4]) == [30, 31, 32]
  chex.assert_trees_all_close(result.activations, activations[expected], rtol=1e-5)
  np.testing.assert_array_equal(result.images, np.stack([source[i]["image"] for i in expected]))
  unit = result.explanation
  chex.assert_trees_all_close(unit.logits, result.activations, rtol=1e-5)
  chex.assert_trees_all_close(unit.contributions.sum(axis=(1, 2)), unit.logits, rtol=1e-4)
  figure = bx.top_activating_figure(result)
  assert isinstance(figure, Figure)
  assert [ax.get_ylabel() for ax in figure.axes[::3]] == [f"record {i}" for i in expected]


@pytest.mark.parametrize("layer, channel, k, batch_size, message", [
    ("layers.42", 0, 3, 16, "no submodule 'layers.42'; valid layers: head, layers.0"),
    (LAYER, 16, 3, 16, "channel 16 is out of range: layer 'layers.4' has 16 channels"),
    (LAYER, 0, 34, 16, "k=34 top-activating images were asked of a source of 33 records"),
    (LAYER, 0, 3, 12, "does not divide over the 8 devices"),
])
def test_top_activating_refuses_bad_requests(model, source, layer, channel, k, batch_size,
                                             message):
  with pytest.raises(UserError, match=message):
    bx.top_activating(model, source, lambda record: record, layer, channel, k,
                      batch_size=batch_size)
