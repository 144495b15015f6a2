"""B-cos invariants on random inputs and weights, for every layer type and several B."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bcos_jax import nn
from bcos_jax.nn.bcos_conv import max_out

BS = [1.0, 1.25, 1.5, 2.0, 2.5]

CONV_SETTINGS = {
    "k3_pad1": dict(kernel_size=3, padding=1),
    "k3_same_stride2": dict(kernel_size=3, strides=2, padding="SAME"),
    "k3_dilation2": dict(kernel_size=3, padding=2, dilation=2),
    "k3_groups2": dict(kernel_size=3, padding=(1, 1), feature_group_count=2),
    "depthwise": dict(kernel_size=5, padding="SAME", feature_group_count=4, out_features=4),
    "k1x3_asym_pad": dict(kernel_size=(1, 3), padding=((0, 0), (2, 0))),
    "maxout2": dict(kernel_size=3, padding=1, max_out=2),
    "v1_scale": dict(kernel_size=3, padding=1, max_out=2, v1_scale_divisor=100.0),
}


def _conv(b, setting, key=0):
  kwargs = dict(CONV_SETTINGS[setting])
  out_features = kwargs.pop("out_features", 6)
  return nn.BcosConv(4, out_features, b=b, rngs=nnx.Rngs(key), **kwargs)


def _x(shape, seed=1):
  return jax.random.normal(jax.random.key(seed), shape)


def _explain_jacobian(layer, x):
  """The Jacobian of the layer in explanation mode, (out.size, x.size)."""
  jac = jax.jit(jax.jacrev(lambda z: layer(z, explain=True)))(x)
  return jac.reshape(-1, x.size)


def _assert_dynamic_linear(layer, x, offset=0.0):
  """y = W(x)·x (+ offset): explanation-mode gradients are the dynamic linear map."""
  y = jax.jit(lambda z: layer(z))(x)  # one compilation, not one per primitive
  w = _explain_jacobian(layer, x)
  chex.assert_trees_all_close((w @ x.reshape(-1)).reshape(y.shape) + offset, y,
                              rtol=1e-4, atol=1e-5 * float(jnp.abs(y).max()))


@pytest.mark.parametrize("b", BS)
@pytest.mark.parametrize("setting", sorted(CONV_SETTINGS))
def test_bcos_conv_is_dynamic_linear(setting, b):
  layer = _conv(b, setting)
  _assert_dynamic_linear(layer, _x((2, 7, 6, 4)))


@pytest.mark.parametrize("setting", sorted(CONV_SETTINGS))
def test_bcos_conv_cos_and_output_bounds(setting):
  """|cos| <= 1, and |out| <= ||patch|| (Eq. 4): B-cos outputs are bounded by the input norm."""
  layer = _conv(2.0, setting)
  x = _x((2, 7, 6, 4))
  norm = layer.patch_norm(x)
  linear = max_out(layer.linear(x), layer.max_out)
  chex.assert_equal_shape([norm if layer.feature_group_count > 1 else linear[..., :1],
                           linear if layer.feature_group_count > 1 else norm])
  cos = linear / norm
  assert float(jnp.abs(cos).max()) <= 1 + 1e-5
  for b in BS:
    layer.b = b
    out = layer(x) * layer.scale
    assert bool(jnp.all(jnp.abs(out) <= norm * (1 + 1e-5)))


@pytest.mark.parametrize("setting", ["k3_pad1", "k3_same_stride2", "k3_dilation2", "k3_groups2"])
def test_bcos_conv_with_b1_is_linear(setting):
  layer = _conv(1.0, setting)
  x1, x2 = _x((2, 7, 6, 4), 1), _x((2, 7, 6, 4), 2)
  chex.assert_trees_all_close(layer(2.0 * x1 - 3.0 * x2), 2.0 * layer(x1) - 3.0 * layer(x2),
                              atol=1e-4)


def test_patch_norm_matches_brute_force_with_groups_dilation_and_padding():
  layer = nn.BcosConv(4, 6, 3, strides=2, padding=((2, 1), (1, 2)), dilation=(2, 1),
                      feature_group_count=2, rngs=nnx.Rngs(0))
  x = np.asarray(_x((1, 9, 8, 4)))
  padded = np.pad(x, ((0, 0), (2, 1), (1, 2), (0, 0)))
  norms = np.asarray(layer.patch_norm(jnp.asarray(x)))
  for i in range(norms.shape[1]):
    for j in range(norms.shape[2]):
      rows = 2 * i + 2 * np.arange(3)
      cols = 2 * j + np.arange(3)
      patch = padded[0][np.ix_(rows, cols)]  # (3, 3, 4)
      for o in range(6):
        group = o // 3  # 6 outputs over 2 groups
        expected = np.sqrt((patch[..., 2 * group:2 * group + 2] ** 2).sum() + 1e-6)
        np.testing.assert_allclose(norms[0, i, j, o], expected, rtol=1e-5)


def test_same_padding_equals_explicit_padding():
  same = nn.BcosConv(4, 6, 3, strides=2, padding="SAME", rngs=nnx.Rngs(0))
  explicit = nn.BcosConv(4, 6, 3, strides=2, padding=((0, 1), (0, 1)), rngs=nnx.Rngs(0))
  x = _x((2, 8, 8, 4))
  chex.assert_trees_all_close(same(x), explicit(x))


@pytest.mark.parametrize("b", BS)
@pytest.mark.parametrize("units", [1, 3])
def test_bcos_dense_is_dynamic_linear_and_bounded(b, units):
  layer = nn.BcosDense(5, 4, b=b, max_out=units, rngs=nnx.Rngs(0))
  x = _x((3, 5))
  _assert_dynamic_linear(layer, x)
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  assert bool(jnp.all(jnp.abs(layer(x)) <= norm * (1 + 1e-5)))


NORMS = {
    "bn_train": lambda: nn.BatchNorm(4),
    "bn_eval": lambda: nn.BatchNorm(4, use_running_average=True),
    "gn_uncentered": lambda: nn.GroupNorm(4, 2, centered=False),
    "gn_centered": lambda: nn.GroupNorm(4, 2),
    "layernorm2d_centered": lambda: nn.GroupNorm(4, 1),
    "positionnorm_uncentered": lambda: nn.LayerNorm(4, centered=False),
    "positionnorm_centered": lambda: nn.LayerNorm(4),
}


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_norm_layers_are_dynamic_linear(norm, use_bias):
  """With statistics detached, a norm layer is W(x)·x plus its bias."""
  layer = NORMS[norm]()
  layer.scale[...] = jnp.array([0.5, 1.0, 1.5, 2.0])
  if not use_bias:
    layer.bias = None
  else:
    layer.bias[...] = jnp.array([0.1, -0.2, 0.3, 0.0])
  if isinstance(layer, nn.BatchNorm):
    layer.running_var[...] = jnp.array([0.5, 1.0, 2.0, 3.0])
  x = _x((2, 3, 3, 4)) + 0.5
  graphdef, state = nnx.split(layer)
  # Pure calls: a training BatchNorm must not update its statistics here.
  apply = lambda z, explain=False: nnx.merge(graphdef, nnx.as_pure(state))(z, explain=explain)  # noqa: E731
  y = apply(x)
  w = jax.jit(jax.jacrev(lambda z: apply(z, explain=True)))(x).reshape(-1, x.size)
  offset = 0.0 if layer.bias is None else layer.bias[...]
  chex.assert_trees_all_close((w @ x.reshape(-1)).reshape(y.shape) + offset, y, atol=1e-4)


def test_norm_statistics_are_detached_only_in_explanation_mode():
  layer = nn.GroupNorm(4, 1, centered=False)
  x = _x((1, 3, 3, 4))
  normal = jax.grad(lambda z: layer(z).sum())(x)
  explain = jax.grad(lambda z: layer(z, explain=True).sum())(x)
  assert float(jnp.abs(normal - explain).max()) > 1e-3


def test_batchnorm_updates_running_variance_only_in_training():
  layer = nn.BatchNorm(4)
  x = _x((8, 3, 3, 4)) * 3
  layer(x)
  expected = 0.9 + 0.1 * np.var(np.asarray(x), axis=(0, 1, 2))
  np.testing.assert_allclose(layer.running_var[...], expected, rtol=1e-5)
  layer.use_running_average = True
  layer(x * 10)
  np.testing.assert_allclose(layer.running_var[...], expected, rtol=1e-5)


def test_logit_layer_keeps_a_zero_bias():
  layer = nn.LogitLayer(temperature=2.0, bias=0.0)
  chex.assert_trees_all_close(layer(jnp.array([4.0, -2.0])), jnp.array([2.0, -1.0]))
  assert layer.bias == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(b=0.5), "B must be >= 1"),
    (dict(max_out=0), "max_out"),
    (dict(feature_group_count=3), "feature_group_count"),
    (dict(padding="FULL"), "padding"),
])
def test_bcos_conv_rejects_bad_options(kwargs, message):
  with pytest.raises(ValueError, match=message):
    layer = nn.BcosConv(4, 6, 3, rngs=nnx.Rngs(0), **kwargs)
    layer(jnp.ones((1, 5, 5, 4)))


def test_bcos_conv_rejects_wrong_input_channels():
  layer = nn.BcosConv(4, 6, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\(N, H, W, 4\)"):
    layer(jnp.ones((1, 5, 5, 3)))
