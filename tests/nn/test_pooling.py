"""Max-pooling: XLA's values and gradient (the first maximum of a window takes it)."""

import chex
import jax
import jax.numpy as jnp
import pytest

from bcos_jax.nn import pooling


@pytest.mark.parametrize("shape, window, strides, padding", [
    ((2, 9, 9, 3), 3, 2, 1),   # a ResNet's stem pooling
    ((2, 8, 7, 3), 2, 2, 0),   # a remainder row and column
    ((1, 10, 10, 2), 3, 1, 1),
    ((2, 11, 11, 4), 5, 3, 2),
])
def test_max_pool_is_xlas(shape, window, strides, padding):
  def xla(x):
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, strides, strides, 1), pads)

  def with_gradient(pool):
    def apply(x):
      out, vjp = jax.vjp(pool, x)
      return out, vjp(jax.random.normal(jax.random.key(1), out.shape))[0]
    return jax.jit(apply)

  ours = with_gradient(lambda x: pooling.max_pool(x, window, strides, padding))
  theirs = with_gradient(xla)
  x = jax.random.normal(jax.random.key(0), shape)
  # Ties: the gradient goes to the window's first maximum (constant: every window one tie).
  for values in (x, jnp.round(x), jnp.ones(shape)):
    expected, expected_gradient = theirs(values)
    result, gradient = ours(values)
    chex.assert_trees_all_equal(result, expected)
    chex.assert_trees_all_close(gradient, expected_gradient, atol=1e-6, rtol=0)
