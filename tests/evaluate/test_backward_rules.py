"""DeepLIFT and Guided Backprop where they differ from Input×Gradient and the gradient:
ReLU networks with biases and max-pooling, against values computed by hand."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bcos_jax import models, nn
from bcos_jax.convert.bcosify import bcosify
from bcos_jax.evaluate import attribution
from bcos_jax.nn import backward_rules

W1 = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.5]], np.float32)  # (hidden 3, inputs 2)
B1 = np.array([0.5, -1.0, 1.0], np.float32)
V = np.array([2.0, -1.0, 3.0], np.float32)


def _mlp(x):
  """f(x) = v · relu(W1 x + b1), x: (N, 2)."""
  return backward_rules.relu(x @ W1.T + B1) @ V


def test_deeplift_relu_rule_by_hand():
  x = np.array([[1.0, 0.5]], np.float32)
  ref = np.zeros_like(x)
  # By hand: h = W1 x + b1 = (0.5, 0, 0.25), h_ref = b1 = (0.5, -1, 1); multipliers
  # (relu(h) - relu(h_ref)) / (h - h_ref) = (the plain gradient 1, as Δ = 0; 0 / 1; -0.75 / -0.75)
  multipliers = np.array([1.0, 0.0, 1.0])
  expected = x * ((V * multipliers) @ W1)
  with backward_rules.use(backward_rules.DEEPLIFT):
    _, vjp = jax.vjp(lambda z: _mlp(z), jnp.concatenate([x, ref]))
    (grads,) = vjp(jnp.ones(2))
  attributions = x * np.asarray(grads[:1])
  np.testing.assert_allclose(attributions, expected, rtol=1e-6)
  # Summation to delta: f(x) - f(ref).
  np.testing.assert_allclose(attributions.sum(), _mlp(x)[0] - _mlp(ref)[0], rtol=1e-6)


def test_guided_backprop_relu_rule_by_hand():
  x = jnp.array([[1.0, 1.0]])
  # h = (-0.5, 0.5, 0.5): units 2 and 3 are on, so the plain gradient is -1·W1[1] + 3·W1[2];
  # Guided Backprop also drops the negative upstream gradient of unit 2: 3·W1[2].
  with backward_rules.use(backward_rules.GUIDED_BACKPROP):
    guided = jax.grad(lambda z: _mlp(z).sum())(x)
  np.testing.assert_allclose(guided[0], [-3.0, 1.5], rtol=1e-6)
  plain = jax.grad(lambda z: _mlp(z).sum())(x)
  np.testing.assert_allclose(plain[0], [-3.5, 0.5], rtol=1e-6)


def test_deeplift_max_pool_rule_by_hand():
  """captum's rule for one 2×2 window: the output differences max(out, out_ref) - out_ref and
  out - max(out, out_ref) go to the input's and the reference's argmax, over Δin."""
  x = jnp.array([1.0, 3.0, 2.0, 0.0]).reshape(1, 2, 2, 1)
  ref = jnp.array([0.0, 0.0, 0.0, 4.0]).reshape(1, 2, 2, 1)
  with backward_rules.use(backward_rules.DEEPLIFT):
    out, vjp = jax.vjp(lambda z: backward_rules.max_pool(z, 2, 2), jnp.concatenate([x, ref]))
    (grads,) = vjp(jnp.ones_like(out))
  np.testing.assert_allclose(out.ravel(), [3.0, 4.0])
  # out = 3 (at index 1), out_ref = 4 (at index 3), cross max 4: the input's argmax gets
  # 4 - 4 = 0, the reference's gets 3 - 4 = -1; Δin = (1, 3, 2, -4).
  expected = np.array([0.0, 0.0, 0.0, -1.0 / -4.0]).reshape(1, 2, 2, 1)
  np.testing.assert_allclose(grads[:1], expected, rtol=1e-6)
  assert float((grads[:1] * (x - ref)).sum()) == pytest.approx(3.0 - 4.0)
  # Outside `use` max-pooling has its ordinary gradient.
  plain = jax.grad(lambda z: backward_rules.max_pool(z, 2, 2).sum())(x)
  np.testing.assert_allclose(plain.ravel(), [0, 1, 0, 0])


TINY = {"standard_resnet18": dict(layers=(1, 1), stem_width=8, num_classes=10),
        "standard_densenet121": dict(growth_rate=4, block_config=(2, 2), stem_width=8,
                                     bn_size=2, num_classes=10)}


def _with_statistics(model: nnx.Module) -> nnx.Module:
  """Random BatchNorm statistics and biases: a conventional network whose ReLUs and biases
  make DeepLIFT differ from Input×Gradient."""
  rng = np.random.default_rng(0)
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
    shape = variable.get_value().shape
    if path[-1] in ("running_mean", "bias"):
      variable.set_value(jnp.asarray(rng.normal(0, 0.3, shape), jnp.float32))
    elif path[-1] == "running_var":
      variable.set_value(jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32))
  return models.eval_mode(model)


def _rgb(model, n=2):
  images = jax.random.randint(jax.random.key(0), (n, 32, 32, 3), 0, 256).astype(jnp.uint8)
  return models.input_transform(model)(images)


def test_deeplift_sums_to_the_logit_difference_on_a_resnet():
  """ReLUs, biases and the stem's max-pooling: DeepLIFT's summation to delta holds,
  f(x) - f(0) per target, where Input×Gradient's does not."""
  model = _with_statistics(models.create("standard_resnet18", rngs=nnx.Rngs(0),
                                         **TINY["standard_resnet18"]))
  x = _rgb(model)
  targets = jnp.array([[1, 4], [7, 2]])
  lift = attribution.deeplift(model, x, targets)
  chex.assert_shape(lift, (2, 2, 32, 32, 3))
  difference = jnp.take_along_axis(model(x) - model(jnp.zeros_like(x)), targets, axis=1)
  chex.assert_trees_all_close(lift.sum(axis=(2, 3, 4)), difference, rtol=1e-4, atol=1e-4)
  ixg = attribution.input_x_gradient(model, x, targets)
  assert float(jnp.abs(ixg.sum(axis=(2, 3, 4)) - difference).max()) > 1e-2
  # Batched as one per target.
  single = attribution.deeplift(model, x, targets[:, 1])
  chex.assert_trees_all_close(single, lift[:, 1], rtol=1e-5, atol=1e-6)


def test_deeplift_on_densenets_and_bcosified_networks():
  standard = _with_statistics(models.create("standard_densenet121", rngs=nnx.Rngs(0),
                                            final_relu=False, **TINY["standard_densenet121"]))
  x = _rgb(standard)
  lift = attribution.deeplift(standard, x, jnp.array([3, 5]))
  difference = (standard(x) - standard(jnp.zeros_like(x)))[jnp.arange(2), jnp.array([3, 5])]
  chex.assert_trees_all_close(lift.sum(axis=(1, 2, 3)), difference, rtol=1e-4, atol=1e-4)
  # B-cosified: its ReLUs remain, so DeepLIFT is not Input×Gradient there (its B-cos
  # convs are differentiated as captum does, so the sum is not f(x) - f(0) either).
  converted = bcosify(_with_statistics(models.create("standard_resnet18", rngs=nnx.Rngs(0),
                                                     **TINY["standard_resnet18"])))
  x6 = nn.add_inverse(jax.random.uniform(jax.random.key(1), (2, 32, 32, 3)))
  lift = attribution.deeplift(converted, x6, jnp.array([0, 1]))
  ixg = attribution.input_x_gradient(converted, x6, jnp.array([0, 1]))
  assert bool(jnp.isfinite(lift).all())
  assert float(jnp.abs(lift - ixg).max()) > 1e-3 * float(jnp.abs(ixg).max())


def test_guided_backprop_on_a_resnet():
  model = _with_statistics(models.create("standard_resnet18", rngs=nnx.Rngs(0),
                                         **TINY["standard_resnet18"]))
  x = _rgb(model)
  guided = attribution.guided_backprop(model, x, jnp.array([1, 2]))
  grad = attribution.gradient(model, x, jnp.array([1, 2]))
  chex.assert_shape(guided, grad.shape)
  assert float(jnp.abs(guided - grad).max()) > 1e-3 * float(jnp.abs(grad).max())
  # The rule is scoped: the plain gradient afterwards is unchanged (no cache shared).
  chex.assert_trees_all_close(attribution.gradient(model, x, jnp.array([1, 2])), grad)


def test_both_reduce_to_the_plain_methods_on_bcos_networks():
  model = models.create("resnet18", rngs=nnx.Rngs(0), layers=(1, 1), stem_width=8,
                        num_classes=10)
  x6 = nn.add_inverse(jax.random.uniform(jax.random.key(0), (2, 32, 32, 3)))
  targets = jnp.array([2, 3])
  chex.assert_trees_all_close(attribution.deeplift(model, x6, targets),
                              attribution.input_x_gradient(model, x6, targets), rtol=1e-5,
                              atol=1e-7)
  chex.assert_trees_all_close(attribution.guided_backprop(model, x6, targets),
                              attribution.gradient(model, x6, targets), rtol=1e-5, atol=1e-7)


def test_unknown_rule_is_named():
  with pytest.raises(ValueError, match="'lrp'"), backward_rules.use("lrp"):
    pass
