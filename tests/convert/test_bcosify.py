"""B-cosification: the official conversion of torchvision networks, its options, its errors."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from golden_weights import GOLDEN_DIR, assert_close, load, official_state_dict

from bcos_jax import explain as bx
from bcos_jax import models, nn
from bcos_jax.convert import (
    StateDictMismatchError,
    expected_state_dict_shapes,
    from_torch_state_dict,
    to_torch_state_dict,
)
from bcos_jax.convert.bcosify import ARCHITECTURES, bcosified_state_dict, bcosify
from bcos_jax.errors import UserError

TINY = {"resnet18": dict(layers=(1, 1), stem_width=8, num_classes=10),
        "resnet50": dict(layers=(1, 1), stem_width=8, num_classes=10),
        "densenet121": dict(growth_rate=4, block_config=(2, 2), stem_width=8, bn_size=2,
                            num_classes=10)}


def _rgb(n=2, size=32, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


def _trained_looking(model: nnx.Module, seed: int = 1) -> nnx.Module:
  """Random BatchNorm statistics and biases, so that conversions that drop or fold them
  show it (a fresh model has zero means and biases)."""
  rng = np.random.default_rng(seed)
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
    value = np.asarray(variable.get_value())
    if path[-1] == "running_mean" or path[-1] == "bias":
      variable.set_value(jnp.asarray(rng.normal(0, 0.1, value.shape), jnp.float32))
    elif path[-1] in ("running_var", "scale"):
      variable.set_value(jnp.asarray(rng.uniform(0.5, 1.5, value.shape), jnp.float32))
  return model


def _standard(arch: str) -> nnx.Module:
  model = models.create(f"standard_{arch}", rngs=nnx.Rngs(0), **TINY[arch])
  return models.eval_mode(_trained_looking(model))


def test_golden_bcosified_resnet18():
  """The official B-cosification of a torchvision ResNet-18 (float64 reference)."""
  golden = load("bcosify_resnet18.npz")
  options = json.loads(str(golden["options"]))
  assert options["arch"] == "resnet18" and options["b"] == 2.0 and options["act_layer"]
  model = bcosify(official_state_dict(golden))  # the architecture identified from the keys
  assert model.config.name == "bcosified_resnet18"
  assert model.logit_layer.bias == pytest.approx(options["logit_bias"])
  x6 = jnp.asarray(np.transpose(golden["x6"], (0, 2, 3, 1)))
  e = bx.explain(model, x6)
  chex.assert_shape(e.weights, x6.shape)
  assert_close(e.logits, golden["logits"], name="logits")
  np.testing.assert_array_equal(e.targets, golden["targets"])
  assert_close(e.weights, np.transpose(golden["dynamic_weights"], (0, 2, 3, 1)), name="weights")
  assert_close(e.contributions, golden["contributions"], name="contributions")
  offset = bx.mean_offset(model, e.weights)
  assert_close(offset, golden["mean_offset"], name="mean_offset")
  # logit = bias + sum(contributions) + mean_offset, exactly up to float32.
  target_logits = e.logits[jnp.arange(2), e.targets]
  chex.assert_trees_all_close(e.contributions.sum(axis=(1, 2)) + offset,
                              target_logits - model.logit_layer.bias, atol=1e-4)
  assert float(jnp.abs(bx.to_rgba(x6[0], e.weights[0]) - golden["rgba0"]).max()) <= 1e-3


def _torchvision_shapes(v2_name: str, manifests) -> dict[str, tuple[int, ...]]:
  """torchvision's state dict shapes, derived from the official v2 B-cos model of the same
  architecture (the same module names): plain conv weights, BatchNorm biases, RGB stem,
  a linear classifier with bias."""
  shapes = {}
  for key, shape, _ in manifests[v2_name]:
    shape = tuple(shape)
    if key.endswith(".linear.weight"):
      base = key.removesuffix(".linear.weight")
      if base in ("fc", "classifier"):
        shapes[f"{base}.weight"] = shape[:2]
        shapes[f"{base}.bias"] = shape[:1]
      else:
        shapes[f"{base}.weight"] = (shape[0], 3, *shape[2:]) if shape[1] == 6 else shape
    else:
      shapes[key] = shape
      if key.endswith(".running_var"):
        shapes[key.removesuffix("running_var") + "bias"] = shape
  return shapes


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_converts(arch):
  """Checked abstractly at full size: torchvision's keys load into standard_<arch>, and
  their B-cosification gives exactly the official v2 model's keys (under `model.`)."""
  manifests = json.loads((GOLDEN_DIR / "manifests.json").read_text())
  torchvision = _torchvision_shapes(arch, manifests)
  standard = nnx.eval_shape(lambda: models.create(f"standard_{arch}", rngs=nnx.Rngs(0)))
  assert expected_state_dict_shapes(standard) == torchvision
  zeros = {k: np.broadcast_to(np.float32(0), s) for k, s in torchvision.items()}
  converted = {k: np.shape(v) for k, v in bcosified_state_dict(zeros).items()}
  bcosified = nnx.eval_shape(lambda: models.create(f"bcosified_{arch}", rngs=nnx.Rngs(0)))
  official = {f"model.{k}": tuple(s) for k, s, _ in manifests[arch]}
  assert converted == official == expected_state_dict_shapes(bcosified)


@pytest.mark.parametrize("arch", list(TINY))
def test_bcosified_network_with_biases_and_b1_is_the_conventional_one(arch):
  """With B = 1 and the biases kept (folded into the uncentered BatchNorm), the B-cosified
  network computes the conventional one (average instead of max pooling in the stem):
  the [w, -w] / 2 stem on the normalised [x, 1 - x] sees what the RGB stem saw."""
  standard = _standard(arch)
  converted = bcosify(standard, b=1.0, keep_biases=True)
  assert converted.config.name == f"bcosified_{arch}"
  reference = nnx.merge(*nnx.split(standard))
  reference.stem_pool = "avg"  # the one change B-cosification makes to the topology
  rgb = _rgb()
  expected = reference(nn.normalize_rgb(rgb))
  assert float(jnp.abs(expected).max()) > 0.1
  # The logit bias -log(C - 1) is the only other difference.
  chex.assert_trees_all_close(converted(nn.add_inverse(rgb)) - converted.logit_layer.bias,
                              expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", list(TINY))
def test_bcosified_contributions_sum_to_the_logit(arch):
  model = bcosify(_standard(arch))
  x6 = nn.add_inverse(_rgb())
  e = bx.explain(model, x6)
  target_logits = e.logits[jnp.arange(2), e.targets]
  total = e.contributions.sum(axis=(1, 2)) + bx.mean_offset(model, e.weights)
  chex.assert_trees_all_close(total, target_logits - model.logit_layer.bias, rtol=1e-4,
                              atol=1e-5 * float(jnp.abs(target_logits).max()))
  # The offset is real: without it the contributions do not sum to the logit.
  assert float(jnp.abs(bx.mean_offset(model, e.weights)).min()) > 1e-6


def test_bcosify_keeps_the_raw_kernels_and_drops_biases():
  standard = _standard("resnet18")
  converted = bcosify(standard)
  w = np.asarray(standard.stages[0][0].conv1.conv.kernel[...])
  np.testing.assert_array_equal(converted.stages[0][0].conv1.conv.kernel[...], w)
  assert not converted.stages[0][0].conv1.conv.unit_norm_kernel
  stem = np.asarray(standard.conv1.kernel[...])
  np.testing.assert_allclose(converted.conv1.kernel[...],
                             np.concatenate([stem, -stem], axis=2) / 2)
  head = np.asarray(standard.head.linear.kernel[...])
  np.testing.assert_array_equal(converted.head.kernel[...][0, 0], head)
  assert converted.head.bias is None and converted.bn1.bias is None
  np.testing.assert_array_equal(converted.bn1.running_var[...], standard.bn1.running_var[...])
  assert converted.stem_pool == "avg" and converted.classifier_before_pool


def test_official_options_as_arguments():
  standard = _standard("resnet18")
  no_relu = bcosify(standard, relu=False, b=1.5)
  assert dict(no_relu.config.kwargs)["activation"] == "none"
  assert no_relu.conv1.b == 1.5
  x6 = nn.add_inverse(_rgb())
  assert float(jnp.abs(no_relu(x6) - bcosify(standard, b=1.5)(x6)).max()) > 1e-4
  learned = bcosify(standard, learn_b=True)
  assert float(learned.conv1.learned_b[...]) == 2.0
  # B is a parameter: the loss has a gradient with respect to it.
  graphdef, params, rest = nnx.split(learned, nnx.Param, ...)

  def loss(params):
    return nnx.merge(graphdef, params, rest)(x6).sum()

  grads = jax.grad(loss)(params)
  assert float(jnp.abs(grads["conv1"]["learned_b"][...])) > 0
  # The official key of a learned B round-trips.
  state_dict = to_torch_state_dict(learned)
  assert "model.conv1.b" in state_dict
  reloaded = from_torch_state_dict("bcosified_resnet18", state_dict, learn_b=True,
                                   **TINY["resnet18"])
  chex.assert_trees_all_close(reloaded(x6), learned(x6))


def test_a_torchvision_state_dict_round_trips_through_the_standard_model():
  standard = _standard("densenet121")
  state_dict = to_torch_state_dict(standard)
  assert "features.norm0.running_mean" in state_dict and "classifier.bias" in state_dict
  reloaded = from_torch_state_dict("standard_densenet121", state_dict, **TINY["densenet121"])
  rgb = nn.normalize_rgb(_rgb())
  chex.assert_trees_all_close(reloaded(rgb), standard(rgb))
  tiny = {k: v for k, v in TINY["densenet121"].items() if k != "num_classes"}
  from_dict = bcosify(state_dict, **tiny)  # identified as a densenet121 variant
  chex.assert_trees_all_close(from_dict(nn.add_inverse(_rgb())),
                              bcosify(standard)(nn.add_inverse(_rgb())))


def test_bad_input_gives_clear_errors():
  with pytest.raises(UserError, match="already a B-cos network"):
    bcosify(models.create("resnet18", rngs=nnx.Rngs(0), **TINY["resnet18"]))
  with pytest.raises(UserError, match="unknown architecture 'vgg11'"):
    bcosify({"fc.weight": np.zeros((10, 4))}, arch="vgg11")
  full = {k: np.broadcast_to(np.float32(0), s)
          for k, s in expected_state_dict_shapes(nnx.eval_shape(
              lambda: models.create("standard_resnet18", rngs=nnx.Rngs(0)))).items()}
  broken = {k: v for k, v in full.items() if k != "layer1.0.bn1.running_var"}
  broken["layer9.extra.weight"] = np.zeros((3,))
  with pytest.raises(StateDictMismatchError) as error:
    bcosify(broken, arch="resnet18")
  assert "missing layer1.0.bn1.running_var" in str(error.value)
  assert "unexpected layer9.extra.weight" in str(error.value)
  # Identification names the closest architecture and its problems.
  with pytest.raises(StateDictMismatchError, match="closest is resnet18"):
    bcosify(broken)
  # An official B-cos v2 state dict is no torchvision one.
  v2 = {k: np.broadcast_to(np.float32(0), s) for k, s in expected_state_dict_shapes(
      nnx.eval_shape(lambda: models.create("resnet18", rngs=nnx.Rngs(0)))).items()}
  with pytest.raises(StateDictMismatchError):
    bcosify(v2)


def test_convert_command_bcosifies_a_torchvision_checkpoint(tmp_path):
  from absl import flags
  from absl.testing import flagsaver

  from bcos_jax.convert import __main__ as cli
  from bcos_jax.convert.torch_files import save_state_dict

  golden = load("bcosify_resnet18.npz")
  state_dict = official_state_dict(golden)
  save_state_dict(state_dict, tmp_path / "resnet18-f37072fd.pth")
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["convert", "--bcosify", "--torch_checkpoint",
                        str(tmp_path / "resnet18-f37072fd.pth"), "--out", str(tmp_path / "out")])
    assert cli.main(argv) == 0
  loaded = models.load(tmp_path / "out")
  assert loaded.config.name == "bcosified_resnet18"
  x6 = jnp.asarray(np.transpose(golden["x6"], (0, 2, 3, 1)))
  assert_close(jax.jit(lambda x: loaded(x))(x6), golden["logits"], name="logits")
  # The same file into the conventional model (torchvision's keys), and back out.
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["convert", "--model", "standard_resnet18", "--torch_checkpoint",
                        str(tmp_path / "resnet18-f37072fd.pth"), "--out", str(tmp_path / "std")])
    assert cli.main(argv) == 0
  standard = models.load(tmp_path / "std")
  exported = to_torch_state_dict(standard)
  assert list(exported) == list(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
