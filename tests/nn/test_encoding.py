"""The [r, g, b, 1-r, 1-g, 1-b] input encoding and the model-entry check."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from bcos_jax import nn


def test_add_inverse_appends_the_inverse_colours():
  rgb = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 4, 5, 3)), jnp.float32)
  x6 = nn.add_inverse(rgb)
  chex.assert_shape(x6, (2, 4, 5, 6))
  chex.assert_trees_all_close(x6[..., :3], rgb)
  chex.assert_trees_all_close(x6[..., 3:], 1 - rgb)
  # Every encoded pixel has the same norm, sqrt(sum of c^2 + (1-c)^2) >= sqrt(1.5).
  assert float(jnp.linalg.norm(x6, axis=-1).min()) >= np.sqrt(1.5) - 1e-6


def test_add_inverse_on_another_axis():
  rgb = jnp.zeros((1, 3, 2, 2))
  chex.assert_shape(nn.add_inverse(rgb, axis=1), (1, 6, 2, 2))


def test_add_inverse_rejects_non_rgb():
  with pytest.raises(ValueError, match="3 channels"):
    nn.add_inverse(jnp.zeros((1, 4, 4, 1)))


@pytest.mark.parametrize("shape, hint", [
    ((1, 8, 8, 3), "add_inverse"),
    ((1, 6, 8, 8), "NCHW"),
    ((8, 8, 6), "batch axis"),
])
def test_check_encoded_names_the_fix(shape, hint):
  with pytest.raises(ValueError, match=hint):
    nn.check_encoded(jnp.zeros(shape), "m")
