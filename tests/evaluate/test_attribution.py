"""Attribution methods against brute-force or analytic references on a tiny B-cos net."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from flax import nnx

from bcos_jax import models
from bcos_jax.evaluate import attribution
from bcos_jax.nn import add_inverse

CHANNELS = (4, 4, 8, 8, 8, 8, 8, 8)
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
  return models.create("v1_cifar9l_b2", widths=CHANNELS, num_classes=NUM_CLASSES,
                       rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def x6():
  """Two real digits (scikit-learn), upscaled to 16×16 RGB and encoded."""
  from sklearn.datasets import load_digits

  digits = load_digits().images[:2] / 16.0
  images = np.repeat(np.repeat(digits, 2, axis=1), 2, axis=2)[..., None].repeat(3, axis=-1)
  return add_inverse(jnp.asarray(images, jnp.float32))


def _logits(model, x6):
  return np.asarray(model(x6))


def _assert_close(actual, reference, tolerance=1e-4):
  """max|a - r| <= tolerance · max|r| (jitted and eager float32 differ by rounding)."""
  actual, reference = np.asarray(actual), np.asarray(reference)
  chex.assert_equal_shape([actual, reference])
  assert np.abs(actual - reference).max() <= tolerance * np.abs(reference).max()


TARGETS = np.array([1, 3])


@pytest.mark.parametrize("name,channels", [
    ("bcos", 6), ("gradient", 6), ("input_x_gradient", 6), ("integrated_gradients", 6),
    ("grad_cam", 1), ("occlusion", 1), ("occ5", 1), ("occ9_ti", 1), ("rise", 1), ("lime", 1)])
def test_every_method_has_one_signature(model, x6, name, channels):
  options = {"rise": dict(masks=32), "lime": dict(samples=50, batch_size=25),
             "integrated_gradients": dict(steps=8), "occlusion": dict(kernel=8, stride=8)
             }.get(name, {})
  method = attribution.get_method(name)
  single = method(model, x6, TARGETS, **options)
  chex.assert_shape(single, (2, 16, 16, channels))
  chex.assert_tree_all_finite(single)
  several = method(model, x6, np.stack([TARGETS, TARGETS[::-1]], axis=1), **options)
  chex.assert_shape(several, (2, 2, 16, 16, channels))
  chex.assert_trees_all_close(several[:, 0], single, rtol=1e-4, atol=1e-4)


def test_bcos_contributions_sum_to_the_logit_minus_bias(model, x6):
  contributions = attribution.bcos(model, x6, TARGETS)
  logits = _logits(model, x6)[np.arange(2), TARGETS]
  bias = float(model.logit_layer.bias)
  chex.assert_trees_all_close(contributions.sum(axis=(1, 2, 3)), logits - bias, rtol=1e-4)


def test_gradient_and_input_x_gradient(model, x6):
  reference = jax.grad(lambda x: model(x)[np.arange(2), TARGETS].sum())(x6)
  _assert_close(attribution.gradient(model, x6, TARGETS), reference)
  _assert_close(attribution.input_x_gradient(model, x6, TARGETS), x6 * reference)


def test_integrated_gradients_are_complete(model, x6):
  attributions = attribution.integrated_gradients(model, x6, TARGETS, steps=50)
  gap = _logits(model, x6) - _logits(model, jnp.zeros_like(x6))
  chex.assert_trees_all_close(attributions.sum(axis=(1, 2, 3)), gap[np.arange(2), TARGETS],
                              rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("kernel, stride", [(5, 4), (6, 4)])  # odd and even kernels
def test_occlusion_equals_a_loop(model, x6, kernel, stride):
  """The official geometry, written out: points (i·s, j·s); an odd kernel zeroes
  [p - (k-1)/2, p + (k-1)/2), an even one [p + s - k, p + k), clipped at 0."""
  attributions = np.asarray(attribution.occlusion(model, x6, TARGETS, kernel=kernel,
                                                  stride=stride))
  original = _logits(model, x6)[np.arange(2), TARGETS]
  reference = np.zeros((2, 16, 16))
  for row in range(0, 16, stride):
    for col in range(0, 16, stride):
      if kernel % 2:
        lo_r, hi_r = row - (kernel - 1) // 2, row + (kernel - 1) // 2
        lo_c, hi_c = col - (kernel - 1) // 2, col + (kernel - 1) // 2
      else:
        lo_r, hi_r, lo_c, hi_c = row + stride - kernel, row + kernel, col + stride - kernel, \
            col + kernel
      inside = np.zeros((16, 16))
      inside[max(0, lo_r):hi_r, max(0, lo_c):hi_c] = 1
      occluded = np.asarray(x6) * (1 - inside)[None, :, :, None]
      drop = original - _logits(model, jnp.asarray(occluded, jnp.float32))[np.arange(2), TARGETS]
      reference += drop[:, None, None] * inside / inside.sum()
  _assert_close(attributions[..., 0], reference)


def test_occlusion_presets_and_a_stride_that_does_not_divide(model, x6):
  chex.assert_trees_all_close(attribution.METHODS["occ9_ti"](model, x6, TARGETS),
                              attribution.occlusion(model, x6, TARGETS, kernel=9, stride=4))
  with pytest.raises(ValueError, match="must divide the image size"):
    attribution.occlusion(model, x6, TARGETS, kernel=5, stride=3)


def test_grad_cam_equals_a_hand_computation(model, x6):
  features = x6
  for layer in model.layers:
    features = layer(features)

  def logits_from(f):
    return model.logit_layer(model.head(f).mean(axis=(1, 2)))

  grads = jax.grad(lambda f: logits_from(f)[np.arange(2), TARGETS].sum())(features)
  cam = jax.nn.relu((grads.sum(axis=(1, 2), keepdims=True) * features).sum(-1))  # (2, 4, 4)
  reference = np.repeat(np.repeat(np.asarray(cam), 4, axis=1), 4, axis=2)
  _assert_close(attribution.grad_cam(model, x6, TARGETS)[..., 0], reference)


def test_grad_cam_needs_a_layer_for_models_without_a_feature_map():
  vit = models.create("simple_vit_ti_patch16_224", depth=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="layer="):
    attribution.grad_cam(vit, jnp.zeros((1, 224, 224, 6)).at[..., 3:].set(1), np.array([0]))


def test_rise_equals_a_loop_over_its_masks(model, x6):
  count = 24
  masks = attribution.rise_masks(count, 16, 16, seed=3)
  def probability(x):
    return scipy.special.expit(_logits(model, x)[np.arange(2), TARGETS])

  reference = sum(probability(x6 * m[None, :, :, None])[:, None, None] * m
                  for m in masks) / (count * 0.1)
  result = attribution.rise(model, x6, TARGETS, masks=count, seed=3, batch_size=8)
  _assert_close(result[..., 0], reference)


def test_rise_masks_are_the_official_legacy_numpy_draws():
  """The official generator, step by step: np.random.seed, the grids, then per mask a
  shift and a bilinear ('reflect') upsampling."""
  from skimage.transform import resize

  first = attribution.rise_masks(200, 32, 32)
  chex.assert_shape(first, (200, 32, 32))
  np.random.seed(42)
  grids = (np.random.rand(200, 8, 8) < 0.1).astype("float32")
  for i in range(3):
    x, y = np.random.randint(0, 4), np.random.randint(0, 4)
    expected = resize(grids[i], (36, 36), order=1, mode="reflect", anti_aliasing=False)
    np.testing.assert_allclose(first[i], expected[x:x + 32, y:y + 32], atol=1e-7)
  assert attribution.rise_masks(200, 32, 32) is first  # cached
  assert float(first.min()) >= 0 and float(first.max()) <= 1
  assert 0.05 < float(first.mean()) < 0.15  # keep probability 0.1


def test_lime_surrogate_recovers_a_linear_model():
  rng = np.random.default_rng(0)
  samples = rng.integers(0, 2, (400, 6)).astype(float)
  samples[0] = 1
  true = np.array([[2.0], [-1.0], [0.5], [0.0], [3.0], [-2.0]])
  coefficients = attribution.lime_surrogate(samples, samples @ true + 0.7, alpha=1e-6)
  chex.assert_trees_all_close(coefficients, true, atol=1e-4)


def test_lime_marks_at_most_five_superpixels(model, x6):
  result = np.asarray(attribution.lime(model, x6, TARGETS, samples=50, batch_size=25))
  assert set(np.unique(result)) <= {0.0, 1.0}
  segments = attribution.quickshift_segments(np.asarray(x6[0, ..., :3]))
  assert len(np.unique(segments[result[0, ..., 0] == 1])) <= 5


def test_bad_input_gets_clear_errors(model, x6):
  with pytest.raises(ValueError, match="add_inverse"):
    attribution.gradient(model, x6[..., :3], TARGETS)
  with pytest.raises(ValueError, match="targets must have shape"):
    attribution.gradient(model, x6, np.array([1, 2, 3]))
  with pytest.raises(ValueError, match="unknown attribution method"):
    attribution.get_method("shap")
  with pytest.raises(ValueError, match="valid layers"):
    attribution.grad_cam(model, x6, TARGETS, layer="nope")
