"""explain / explain_unit: golden parity with the official code, invariants, modes, tracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from golden_weights import assert_close, load, official_state_dict

from bcos_jax import explain as bx
from bcos_jax import models, nn
from bcos_jax.convert import from_torch_state_dict

GOLDEN_MODELS = ["v1_cifar9l_b2", "v1_cifar9l_b1.25", "resnet18", "v1_resnet34",
                 "simple_vit_ti_patch16_224"]


def _golden(name):
  golden = load(f"model_{name}.npz")
  model = from_torch_state_dict(name, official_state_dict(golden))
  x6 = jnp.asarray(np.transpose(golden["x6"], (0, 2, 3, 1)))
  return model, x6, golden


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_model_explanations(name):
  model, x6, golden = _golden(name)
  assert int(golden["image_size"]) == x6.shape[1]
  e = bx.explain(model, x6)
  n, h, w = golden["contributions"].shape
  chex.assert_shape(e.logits, (n, golden["logits"].shape[1]))
  chex.assert_shape(e.weights, (n, h, w, 6))
  chex.assert_shape(e.contributions, (n, h, w))
  assert_close(e.logits, golden["logits"], name="logits")
  bias = model.logit_layer.bias  # the logits minus their constant, where the model is
  assert_close(e.logits - bias, golden["logits"] - bias, name="logits - bias")
  np.testing.assert_array_equal(e.targets, golden["targets"])
  assert_close(e.weights, np.transpose(golden["dynamic_weights"], (0, 2, 3, 1)), name="weights")
  assert_close(e.contributions, golden["contributions"], name="contributions")
  rgba = bx.to_rgba(x6[0], e.weights[0])
  assert float(jnp.abs(rgba - golden["rgba0"]).max()) <= 1e-3


def _random_model(name="v1_cifar9l_b2", **overrides):
  # Narrow layers keep the test fast; the architecture is the paper's.
  overrides.setdefault("widths", (8, 8, 16, 16, 16, 16, 16, 16))
  return models.create(name, rngs=nnx.Rngs(0), **overrides)


def _images(n=3, size=16, seed=0):
  rgb = jax.random.uniform(jax.random.key(seed), (n, size, size, 3))
  return nn.add_inverse(rgb)


SMALL = {"cifar9l": dict(widths=(8, 8, 16, 16, 16, 16, 16, 16)),
         "resnet": dict(layers=(1, 1), stem_width=8, num_classes=10),
         "densenet": dict(growth_rate=4, block_config=(2, 2), stem_width=8, bn_size=2,
                          num_classes=10),
         "vgg": dict(layers=(8, "M", 16, "M"), hidden_width=16, num_classes=10),
         "convnext": dict(widths=(8, 16), depths=(1, 1), layer_scale=0.5, num_classes=10)}


@pytest.mark.parametrize("name", [n for n in models.names() if "cifar9l" in n]
                         + ["resnet18", "resnet50", "resnext50_32x4d", "v1_resnet34",
                            "densenet121", "v1_densenet121", "vgg11_bnu", "v1_vgg11",
                            "convnext_tiny", "convnext_tiny_bnu"])
def test_contributions_sum_to_logit_minus_bias(name):
  family = next(f for f in SMALL if f in name.replace("resnext", "resnet"))
  overrides = dict(SMALL[family])
  if name == "resnext50_32x4d":
    overrides.update(groups=2, width_per_group=32)
  model = models.create(name, rngs=nnx.Rngs(0), **overrides)
  x6 = _images()
  e = bx.explain(model, x6)
  target_logits = jnp.take_along_axis(e.logits, e.targets[:, None], axis=1)[:, 0]
  chex.assert_trees_all_close(e.contributions.sum(axis=(1, 2)),
                              target_logits - model.logit_layer.bias, rtol=2e-4,
                              atol=1e-5 * float(jnp.abs(target_logits).max()))
  np.testing.assert_array_equal(e.targets, jnp.argmax(e.logits, axis=-1))


@pytest.mark.parametrize("name, overrides", [
    ("simple_vit_ti_patch16_224", dict(patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32)),
    ("vitc_ti_patch1_14", dict(stem_widths=(8, 16), dim=16, depth=1, heads=2, mlp_dim=32)),
])
def test_vit_explanations_are_the_dynamic_linear_map(name, overrides):
  """ViTs add a fixed position embedding, so contributions do not sum to the logit;
  W(x) must still be the explanation-mode gradient, with q and k detached."""
  model = models.create(name, rngs=nnx.Rngs(0), num_classes=10, **overrides)
  x6 = _images(2)
  e = bx.explain(model, x6, jnp.array([3, 7]))
  chex.assert_shape(e.weights, (2, 16, 16, 6))
  for i, t in enumerate((3, 7)):
    grad = jax.jit(jax.grad(lambda x, i=i, t=t: model(x, explain=True)[i, t]))(x6)
    assert_close(e.weights[i], grad[i], rtol=1e-5)
  normal = jax.jit(jax.grad(lambda x: model(x)[0, 3]))(x6)
  assert float(jnp.abs(normal[0] - e.weights[0]).max()) > 1e-4 * float(jnp.abs(normal).max())


@pytest.mark.parametrize("name", ["standard_simple_vit_ti_patch16_224",
                                  "standard_vitc_ti_patch1_14"])
def test_standard_vit_baselines_take_rgb(name):
  overrides = dict(dim=16, depth=1, heads=2, mlp_dim=32, num_classes=10)
  overrides |= dict(patch_size=4) if "simple" in name else dict(stem_widths=(8, 16))
  model = models.create(name, rngs=nnx.Rngs(0), **overrides)
  rgb = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  chex.assert_shape(jax.jit(lambda x: model(x))(rgb), (2, 10))
  assert model.logit_layer.bias == 0.0
  with pytest.raises(ValueError, match="normalised RGB"):
    model(jnp.zeros((2, 16, 16, 6)))


def test_v1_inception_explanations_and_aux_head():
  """The full v1 Inception-v3 at its smallest input size (75×75)."""
  # Bias 0: the untrained logits are ~1e-4, below float32's resolution at log(0.01/0.99).
  model = models.create("v1_inception_v3", rngs=nnx.Rngs(0), num_classes=10, logit_bias=0.0)
  x6 = nn.add_inverse(jax.random.uniform(jax.random.key(0), (1, 75, 75, 3)))
  e = bx.explain(model, x6)
  assert_close(e.contributions.sum(), e.logits[0, e.targets[0]], rtol=1e-4)
  chex.assert_shape(jax.jit(lambda x: model.logits_with_aux(x)[1])(x6), (1, 10))


def test_several_targets_per_image_in_one_call():
  model = _random_model()
  x6 = _images()
  targets = jnp.array([[0, 3], [1, 1], [9, 2]])
  several = bx.explain(model, x6, targets)
  chex.assert_shape(several.weights, (3, 2, 16, 16, 6))
  chex.assert_shape(several.contributions, (3, 2, 16, 16))
  for k in range(2):
    single = bx.explain(model, x6, targets[:, k])
    chex.assert_trees_all_close(several.weights[:, k], single.weights, atol=1e-6)
    np.testing.assert_array_equal(several.targets[:, k], single.targets)


def test_explanation_mode_differs_from_the_plain_gradient_and_does_not_leak():
  model = _random_model()
  x6 = _images(1)

  def plain_gradient():
    return jax.jit(jax.grad(lambda x: model(x)[0, 0]))(x6)

  before = plain_gradient()
  e = bx.explain(model, x6, jnp.array([0]))
  after = plain_gradient()
  chex.assert_trees_all_close(before, after)  # explain() switched nothing globally
  assert float(jnp.abs(e.weights - before).max()) > 1e-3 * float(jnp.abs(e.weights).max())
  explain_gradient = jax.jit(jax.grad(lambda x: model(x, explain=True)[0, 0]))(x6)
  chex.assert_trees_all_close(e.weights, explain_gradient, atol=1e-6)


def test_explain_is_jittable_and_traces_once():
  model = _random_model()
  traced = nnx.jit(chex.assert_max_traces(bx.explain, n=1))
  first = traced(model, _images(seed=0))
  second = traced(model, _images(seed=1))
  chex.assert_shape([first.weights, second.weights], (3, 16, 16, 6))
  assert float(jnp.abs(first.weights - second.weights).max()) > 0


def test_explanation_step_compiles_once_for_new_images_of_the_same_shape():
  from bcos_jax.explain import explanation

  model = _random_model()
  bx.explain(model, _images(seed=0))
  compiled = explanation._explain_jit._cache_size()  # noqa: SLF001
  for seed in (1, 2):
    bx.explain(model, _images(seed=seed))
  assert explanation._explain_jit._cache_size() == compiled  # noqa: SLF001


def test_explain_uses_evaluation_statistics():
  """A model whose norm layer is in training mode is explained with running stats."""

  class Tiny(nnx.Module):
    def __init__(self, *, rngs):
      self.conv = nn.BcosConv(6, 4, 3, padding=1, rngs=rngs)
      self.norm = nn.BatchNorm(4, use_bias=False)

    def __call__(self, x, *, explain=False):
      return self.norm(self.conv(x, explain=explain), explain=explain).mean(axis=(1, 2))

  if "test_tiny_batchnorm" not in models.names():  # a family of the test's own
    models.register("test_tiny_batchnorm", models.Family("tiny", Tiny, lambda m, p: {}))
  model = models.create("test_tiny_batchnorm", rngs=nnx.Rngs(0))
  model.norm.running_var[...] = jnp.full((4,), 4.0)
  x6 = _images(2)
  e = bx.explain(model, x6)
  assert not model.norm.use_running_average  # the user's model is unchanged
  chex.assert_trees_all_close(model.norm.running_var[...], jnp.full((4,), 4.0))
  eval_logits = nnx.view(model, use_running_average=True)(x6)
  chex.assert_trees_all_close(e.logits, eval_logits, atol=1e-6)


def test_explain_unit_of_an_intermediate_neuron():
  model = _random_model()
  x6 = _images(2)
  assert "layers.4" in bx.module_paths(model)
  e = bx.explain_unit(model, x6, "layers.4", channel=3, position=(2, 5))
  chex.assert_shape(e.weights, (2, 16, 16, 6))
  features = x6
  for layer in model.layers[:5]:
    features = layer(features)
  chex.assert_trees_all_close(e.logits, features[:, 2, 5, 3], rtol=1e-5)
  chex.assert_trees_all_close(e.contributions.sum(axis=(1, 2)), e.logits, rtol=1e-4, atol=1e-6)
  # The unit sees only its receptive field: at half resolution (after the
  # stride-2 layer 2) layers 3-4 reach rows 0..4, i.e. input rows up to 11.
  assert float(jnp.abs(e.weights[:, 12:]).max()) == 0.0
  assert float(jnp.abs(e.weights[:, :12]).max()) > 0.0


def test_explain_unit_of_the_last_layer_is_the_logit_explanation():
  model = _random_model()
  x6 = _images(2)
  unit = bx.explain_unit(model, x6, "head", channel=4)  # summed over positions
  logit = bx.explain(model, x6, jnp.array([4, 4]))
  positions = 4 * 4  # 16x16 input, two stride-2 layers
  scale = positions * model.logit_layer.temperature
  assert_close(unit.weights, logit.weights * scale, rtol=1e-5)


def test_bad_inputs_give_clear_errors():
  model = _random_model()
  with pytest.raises(ValueError, match="add_inverse"):
    bx.explain(model, jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match=r"\(N,\) or \(N, T\)"):
    bx.explain(model, _images(2), jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match="integer"):
    bx.explain(model, _images(2), jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match="valid layers"):
    bx.explain_unit(model, _images(2), "layers.42", 0)
  with pytest.raises(ValueError, match="add_inverse"):
    model(jnp.zeros((1, 16, 16, 3)))
