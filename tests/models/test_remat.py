"""remat=True: the same variables, outputs, gradients, statistics and explanations, less memory."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bcos_jax import explain, models, nn
from bcos_jax.evaluate import attribution

# One small model per family with the option; stochastic depth and BatchNorm where the
# family has them, so their updates inside a rematerialised block are checked too.
SMALL = {
    "resnet18": dict(stem_width=8, layers=(1, 1), num_classes=10, stochastic_depth_prob=0.5),
    "densenet121": dict(growth_rate=4, block_config=(2, 2), stem_width=8, bn_size=2,
                        num_classes=10),
    "convnext_tiny_bnu": dict(widths=(8, 16), depths=(1, 1), layer_scale=0.5, num_classes=10,
                              stochastic_depth_prob=0.5),
    "vitc_ti_patch1_14": dict(stem_widths=(8, 16), dim=16, depth=2, heads=2, mlp_dim=16,
                              num_classes=10),
}


def _pair(name):
  """The same model (same initialisation) without and with remat."""
  return (models.create(name, rngs=nnx.Rngs(0), **SMALL[name]),
          models.create(name, rngs=nnx.Rngs(0), remat=True, **SMALL[name]))


def _images(n=2, size=32):
  return nn.add_inverse(jax.random.uniform(jax.random.key(0), (n, size, size, 3)))


def _key_data(tree):
  """Random-number keys as their integers, so trees of them can be compared."""
  return jax.tree.map(lambda v: jax.random.key_data(v)
                      if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v, tree)


def _assert_gradients_close(actual, expected):
  # float32 rounding of a different operation order: relative to the largest gradient
  # (a small gradient is a sum that cancels; in float64 both agree to 1e-11).
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(expected))
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6 * scale),
               actual, expected)


def _training_loss(model, x6):
  """Loss, gradients and updated statistics/streams of one training forward-backward."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params):
    trained = nnx.merge(graphdef, params, rest, copy=True)
    loss = trained(x6).sum()
    return loss, nnx.state(trained, nnx.Not(nnx.Param))

  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)


# ConvNeXt's blocks are recomputed by the same call as ResNet's (stochastic depth too).
@pytest.mark.parametrize("name", ["densenet121", "resnet18", "vitc_ti_patch1_14"])
def test_remat_trains_as_without_it(name):
  plain, remat = _pair(name)
  (loss, stats), grads = _training_loss(plain, _images())
  (remat_loss, remat_stats), remat_grads = _training_loss(remat, _images())
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  _assert_gradients_close(remat_grads, grads)
  # Norm statistics and the stochastic-depth streams' counters move as without remat
  # (the same masks, or the loss and gradients above would differ).
  chex.assert_trees_all_close(_key_data(remat_stats), _key_data(stats), rtol=1e-5)
  before = jax.tree.leaves(_key_data(nnx.state(plain, nnx.Not(nnx.Param))))
  assert not before or any(bool(jnp.any(a != b)) for a, b in zip(
      before, jax.tree.leaves(_key_data(stats)), strict=True))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_remat_changes_no_variable_and_is_in_the_config(name):
  plain, remat = _pair(name)
  shapes = lambda m: jax.tree.map(lambda v: (v.shape, v.dtype), nnx.state(m))  # noqa: E731
  assert shapes(remat) == shapes(plain)
  assert models.info(name).family.torch_keys(remat, "") == models.info(name).family.torch_keys(
      plain, "")
  assert dict(remat.config.kwargs)["remat"] is True
  assert dict(plain.config.kwargs)["remat"] is False
  # A checkpoint of the plain model loads into the remat one.
  other = models.create(name, rngs=nnx.Rngs(1), remat=True, **SMALL[name])
  nnx.update(other, nnx.state(plain))
  chex.assert_trees_all_close(_key_data(nnx.state(other)), _key_data(nnx.state(plain)))


# A family with a Grad-CAM layer and one without: the view that turns remat off is shared
# (bcos_jax.nn.remat), the trained blocks are checked per family above.
@pytest.mark.parametrize("name", ["resnet18", "vitc_ti_patch1_14"])
def test_explanations_and_probes_are_unchanged(name):
  plain, remat = _pair(name)
  x6 = _images()
  e, remat_e = explain.explain(plain, x6), explain.explain(remat, x6)
  chex.assert_trees_all_close(remat_e.weights, e.weights)
  chex.assert_trees_all_close(remat_e.logits, e.logits)
  # Probes read values inside the blocks: evaluation views run the blocks plainly.
  assert models.eval_mode(remat).deterministic and not remat.deterministic
  if models.info(name).family.grad_cam_layer is not None:
    targets = jnp.array([1, 2])
    chex.assert_trees_all_close(attribution.grad_cam(remat, x6, targets),
                                attribution.grad_cam(plain, x6, targets))


# XLA:CPU removes jax.checkpoint's optimisation barriers early (its cse_barrier_expander
# pass) and common-subexpression elimination then merges the recomputation back into the
# forward pass; accelerator compilers keep them. The flag keeps them on CPU as well.
_MEMORY_SCRIPT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp
    from flax import nnx
    from bcos_jax import models
    temps = {}
    for remat in (False, True):
      model = nnx.eval_shape(lambda: models.create(
          "densenet121", rngs=nnx.Rngs(0), remat=remat, growth_rate=8, block_config=(4,),
          stem_width=16, num_classes=10))
      graphdef, params, rest = nnx.split(model, nnx.Param, ...)
      loss = lambda p, r, x: nnx.merge(graphdef, p, r, copy=True)(x).sum()
      x = jax.ShapeDtypeStruct((4, 32, 32, 6), jnp.float32)
      compiled = jax.jit(jax.grad(loss)).lower(params, rest, x).compile()
      temps[str(remat)] = compiled.memory_analysis().temp_size_in_bytes
    print(json.dumps(temps))
""")


def test_remat_lowers_the_memory_of_a_densenets_gradient():
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_disable_hlo_passes=cse_barrier_expander"}
  result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  temps = json.loads(result.stdout.strip().splitlines()[-1])
  assert temps["True"] < 0.7 * temps["False"], temps


def test_a_training_config_turns_it_on_with_config_remat():
  from bcos_jax.errors import UserError  # noqa: PLC0415
  from bcos_jax.train import config_schema, init_from  # noqa: PLC0415

  config = config_schema.complete(config_schema.defaults())
  config.model.name, config.remat = "resnet18", True
  config.model.overrides.update(stem_width=8, layers=(1, 1), num_classes=10)
  model, _ = init_from.initial_model(config, num_classes=10)
  assert dict(model.config.kwargs)["remat"] is True
  config.model.name, config.model.overrides = "v1_cifar9l_b2", {"widths": (4,) * 8}
  with pytest.raises(UserError, match="config.remat=True: v1_cifar9l_b2 has no blocks"):
    init_from.initial_model(config, num_classes=10)
