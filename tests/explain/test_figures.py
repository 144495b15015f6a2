"""Top-k and contrastive explanations, and the figures that show them.

Every test explains the same three images with the same shapes of targets, so
the explanation step compiles a few times only.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

from bcos_jax import explain as bx
from bcos_jax import models
from bcos_jax.errors import UserError

WIDTHS = (8, 8, 16, 16, 16, 16, 16, 16)


@pytest.fixture(scope="module")
def model():
  return models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=WIDTHS)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def x6(model, images):
  return models.input_transform(model)(jnp.asarray(images))


@pytest.fixture(scope="module")
def logits(model, x6) -> np.ndarray:
  """The plain forward pass, not explanation mode's."""
  return np.asarray(jax.jit(lambda x: models.eval_mode(model)(x))(x6))


def test_top_k_explanations_are_the_true_top_k_and_sum_to_their_logits(model, x6, logits):
  e = bx.explain_top_k(model, x6, 2)
  top = np.argsort(-logits, axis=1, kind="stable")[:, :2]
  np.testing.assert_array_equal(e.targets, top)
  chex.assert_shape(e.weights, (3, 2, 16, 16, 6))
  shown = np.take_along_axis(logits, top, axis=1)
  chex.assert_trees_all_close(e.contributions.sum(axis=(2, 3)),
                              shown - model.logit_layer.bias, rtol=2e-4,
                              atol=1e-5 * float(np.abs(shown).max()))


@pytest.mark.parametrize("k", [0, 11])
def test_top_k_outside_the_classes_is_refused(model, x6, k):
  with pytest.raises(UserError, match=f"top_k={k} must be between 1 and the model's 10"):
    bx.explain_top_k(model, x6, k)


def test_figure_draws_each_top_class_with_its_name_probability_and_maps(model, images, x6,
                                                                        logits):
  names = [f"digit {i}" for i in range(10)]
  figure = bx.figure(model, images, top_k=2, class_names=names, row_labels=["a", "b", "c"])
  assert isinstance(figure, Figure)
  axes = np.array(figure.axes).reshape(3, 5)  # input, then (colour, contributions) per class
  e = bx.explain_top_k(model, x6, 2)
  for n in range(3):
    assert axes[n, 0].get_ylabel() == "abc"[n]
    np.testing.assert_array_equal(axes[n, 0].get_images()[0].get_array(), images[n])
    for t in range(2):
      c = int(e.targets[n, t])
      probability = 1 / (1 + np.exp(-logits[n, c]))
      assert axes[n, 1 + 2 * t].get_title() == f"digit {c}\np = {probability:.2f}"
      drawn_rgba = axes[n, 1 + 2 * t].get_images()[0].get_array()
      np.testing.assert_allclose(drawn_rgba, bx.to_rgba(x6[n], e.weights[n, t], smooth=3),
                                 atol=1e-6)  # small images: smoothing 3, as in training
      drawn_map = axes[n, 2 + 2 * t].get_images()[0].get_array()
      np.testing.assert_allclose(drawn_map, e.contributions[n, t], rtol=1e-6)


def test_figure_without_names_says_class_i_and_checks_its_images(model, images, x6, logits):
  figure = bx.figure(model, images, top_k=2)
  assert figure.axes[1].get_title().startswith(f"class {np.argmax(logits[0])}\np = ")
  with pytest.raises(UserError, match="uint8"):
    bx.explanation_figure(images.astype(np.float32), x6, bx.explain_top_k(model, x6, 2))


def test_contrast_sums_to_the_difference_of_the_logits(model, images, x6, logits):
  top2 = np.argsort(-logits, axis=1, kind="stable")[:, :2]
  c = bx.contrast(model, x6, top2[:, 0], top2[:, 1])
  rows = np.arange(3)
  difference = logits[rows, top2[:, 0]] - logits[rows, top2[:, 1]]
  # The logit bias is one constant for all classes: it cancels.
  chex.assert_trees_all_close(c.contributions.sum(axis=(1, 2)), difference, rtol=1e-3,
                              atol=1e-5 * float(np.abs(logits).max()))
  fixed = bx.contrast(model, x6, 3, 7)  # one pair of classes for every image
  np.testing.assert_array_equal(fixed.class_b, [7, 7, 7])
  chex.assert_trees_all_close(fixed.contributions.sum(axis=(1, 2)), logits[:, 3] - logits[:, 7],
                              rtol=1e-3, atol=1e-5 * float(np.abs(logits).max()))
  figure = bx.contrast_figure(images, x6, c)
  assert figure.axes[1].get_title() == (f"class {top2[0, 0]} − class {top2[0, 1]}\n"
                                        f"Δ logit = {difference[0]:.2f}")


@pytest.mark.parametrize("class_a, class_b, message", [
    (3, 10, r"0\.\.9"), (-1, 2, r"0\.\.9"), ([1, 2], 3, r"one per image \(3,\)"),
    (1.0, 2, "float32")])
def test_contrast_refuses_classes_the_model_lacks(model, x6, class_a, class_b, message):
  with pytest.raises(UserError, match=message):
    bx.contrast(model, x6, class_a, class_b)


@pytest.mark.parametrize("channel, position, message", [
    (16, None, r"channel 16 is out of range: layer 'layers.4' has 16 channels \(0..15\)"),
    (0, (2, 99), r"position \(2, 99\) is not in layer 'layers.4'"),
    (0, (2,), r"position \(2,\) is not in layer 'layers.4'")])
def test_explain_unit_refuses_a_unit_outside_its_layer(model, x6, channel, position, message):
  # Without the check JAX would clamp the index and explain another unit.
  with pytest.raises(UserError, match=message):
    bx.explain_unit(model, x6, "layers.4", channel, position)
