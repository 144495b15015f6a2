"""The model registry and the CIFAR-10 network's configuration."""

import math

import chex
import jax.numpy as jnp
import pytest
from flax import nnx

from bcos_jax import models
from bcos_jax.models import cifar


def test_names_list_every_cifar_variant():
  expected = {f"v1_cifar9l_b{b:g}" for b in (1, 1.25, 1.5, 1.75, 2, 2.25, 2.5)}
  assert expected | {"v1_cifar9l_plain_b2"} <= set(models.names())
  assert "v1_cifar9l_b2" in models.names() and "v1_cifar9l_b1.25" in models.names()


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match="v1_cifar9l_b2") as error:
    models.create("v1_cifar9l_b3", rngs=nnx.Rngs(0))
  assert "unknown model 'v1_cifar9l_b3'" in str(error.value)


def test_unknown_option_lists_the_valid_ones():
  with pytest.raises(ValueError, match="num_classes"):
    models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), num_clases=100)


@pytest.mark.parametrize("b, exponent", [(1, -3), (1.25, -3), (1.5, -2), (1.75, 1), (2, 2),
                                         (2.25, 2), (2.5, 3)])
def test_config_carries_the_papers_constants(b, exponent):
  config = models.config_for(f"v1_cifar9l_b{b:g}").as_dict()
  assert config["b"] == b and config["max_out"] == 2 and config["num_classes"] == 10
  assert config["scale"] == pytest.approx(10 ** (-2 + 1.5 * (2.5 - b)))
  assert config["logit_temperature"] == pytest.approx(10.0**exponent)
  assert config["logit_bias"] == pytest.approx(math.log(0.1 / 0.9))


def test_plain_variant_has_no_maxout():
  assert models.config_for("v1_cifar9l_plain_b2").as_dict()["max_out"] == 1


def test_create_records_its_config_and_overrides():
  model = nnx.eval_shape(lambda: models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0),
                                               num_classes=100))
  assert model.config.name == "v1_cifar9l_b2"
  assert model.config.as_dict()["num_classes"] == 100
  assert model.head.kernel.get_value().shape == (1, 1, 256, 200)  # MaxOut 2
  assert model.logit_layer.temperature == 100.0


def test_architecture_matches_the_paper():
  model = nnx.eval_shape(lambda: models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0)))
  convs = [*model.layers, model.head]
  assert [layer.kernel_size[0] for layer in convs] == [3] * 8 + [1]
  assert [layer.strides[0] for layer in convs] == list(cifar.STRIDES)
  assert [layer.out_features for layer in convs] == [*cifar.WIDTHS, 10]
  assert all(layer.max_out == 2 and layer.b == 2 for layer in convs)


def test_forward_shape_and_entry_check():
  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0),
                        widths=(4, 4, 4, 4, 4, 4, 4, 4))
  chex.assert_shape(model(jnp.ones((2, 32, 32, 6))), (2, 10))
  with pytest.raises(ValueError, match="add_inverse"):
    model(jnp.ones((2, 32, 32, 3)))


def test_v2_cifar_resnet_has_a_small_stem_and_explains_exactly():
  import jax

  from bcos_jax import explain
  from bcos_jax.nn import add_inverse

  model = models.create("cifar10_resnet20", norm="", max_out=2, rngs=nnx.Rngs(0))
  assert model.conv1.kernel_size == (3, 3) and model.stem_pool == "none"
  x6 = add_inverse(jax.random.uniform(jax.random.key(0), (2, 32, 32, 3)))
  e = jax.jit(lambda x: explain.explain(model, x))(x6)
  chex.assert_shape(e.logits, (2, 10))
  chex.assert_trees_all_close(e.contributions.sum(axis=(1, 2)),
                              e.logits[jax.numpy.arange(2), e.targets] - model.logit_layer.bias,
                              rtol=1e-4, atol=1e-5)
