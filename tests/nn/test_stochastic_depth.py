"""Stochastic depth: random while training, the identity in evaluation and explanations."""

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from bcos_jax import explain, models, nn
from bcos_jax.nn.stochastic_depth import StochasticDepth


def test_drops_rows_and_rescales_while_training():
  layer = StochasticDepth(0.5, rngs=nnx.Rngs(0))
  x = jnp.ones((256, 2, 2, 3))
  y = layer(x)
  kept = y[:, 0, 0, 0] > 0
  assert 0.3 < float(kept.mean()) < 0.7  # about half the rows survive
  chex.assert_trees_all_close(y[kept], jnp.full_like(y[kept], 2.0))  # scaled by 1/(1-p)
  assert bool(jnp.all(y[~kept] == 0))
  assert bool(jnp.any(layer(x) != y))  # a new mask each call


def test_deterministic_is_the_identity():
  layer = nnx.view(StochasticDepth(0.5, rngs=nnx.Rngs(0)), deterministic=True)
  x = jnp.arange(24.0).reshape(2, 3, 4)
  chex.assert_trees_all_close(layer(x), x)
  with pytest.raises(ValueError, match="rate"):
    StochasticDepth(1.0)


@pytest.mark.parametrize("name, overrides", [
    ("resnet18", dict(stem_width=8, layers=(1, 1))),
    ("convnext_tiny", dict(widths=(8, 16), depths=(1, 1), layer_scale=0.5)),
])
def test_models_with_stochastic_depth_explain_exactly(name, overrides):
  model = models.create(name, rngs=nnx.Rngs(0), num_classes=10, stochastic_depth_prob=0.5,
                        **overrides)
  x6 = nn.add_inverse(jax.random.uniform(jax.random.key(0), (2, 32, 32, 3)))
  e = explain.explain(model, x6)  # deterministic: every branch kept
  logits = jnp.take_along_axis(e.logits, e.targets[:, None], 1)[:, 0]
  chex.assert_trees_all_close(e.contributions.sum((1, 2)), logits - model.logit_layer.bias,
                              rtol=1e-3, atol=1e-5 * float(jnp.abs(logits).max()))
  evaluation = nnx.view(model, deterministic=True, use_running_average=True,
                        raise_if_not_found=False)
  chex.assert_trees_all_close(e.logits, evaluation(x6), atol=1e-5)
