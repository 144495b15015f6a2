"""The model contract: what every family declares, and the one way each tool reads it."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bcos_jax import explain, models, nn
from bcos_jax.evaluate import attribution

PACKAGE = pathlib.Path(__file__).parents[2] / "bcos_jax"
# One small model per family: the contract is the family's, not the size's.
SMALL = {
    "v1_cifar9l_b2": dict(widths=(4,) * 8),
    "resnet18": dict(stem_width=8, layers=(1, 1), num_classes=10),
    "densenet121": dict(growth_rate=4, block_config=(1, 1), stem_width=8, bn_size=1,
                        num_classes=10),
    "vgg11_bnu": dict(layers=(4, "M", 8, "M"), hidden_width=8, num_classes=10),
    "convnext_tiny": dict(widths=(8, 16), depths=(1, 1), num_classes=10),
    "vitc_ti_patch1_14": dict(stem_widths=(8, 16), dim=16, depth=1, heads=2, mlp_dim=16,
                              num_classes=10),
    "standard_vitc_ti_patch1_14": dict(stem_widths=(8, 16), dim=16, depth=1, heads=2,
                                       mlp_dim=16, num_classes=10),
}


def test_every_name_declares_its_input_and_whether_it_is_bcos():
  for name in models.names():
    found = models.info(name)
    standard = name.startswith("standard_")
    assert found.bcos == (not standard), name
    assert found.encoding.name == ("imagenet_normalized_rgb" if standard else "add_inverse")
    assert found.torch_prefix in ("", "0.", "model.")
    # The official BcosifyNetwork keeps the network as `model`.
    assert (found.torch_prefix == "model.") == name.startswith("bcosified_"), name


def test_v1_checkpoints_declare_their_sequential_prefix():
  prefixes = {name: models.info(name).torch_prefix for name in models.names()}
  assert {n for n, p in prefixes.items() if p == "0."} == {
      "v1_resnet34", "v1_vgg11", "v1_densenet121", "v1_inception_v3",
      *(n for n in models.names() if n.startswith(("simple_vit_", "vitc_")))}


def test_registry_names_are_written_out_where_they_are_registered():
  """A name found by grep: no f-string loop hides `v1_cifar9l_b1.25` from a search."""
  sources = "".join(path.read_text() for path in (PACKAGE / "models").glob("*.py"))
  for name in models.names():
    if name.startswith("test_"):  # registered by tests
      continue
    assert re.search(rf'register\(\s*"{re.escape(name)}"', sources), name


def test_no_model_file_imports_a_private_helper():
  for path in (PACKAGE / "models").glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom):
        private = [a.name for a in node.names if a.name.startswith("_")]
        assert not private, f"{path.name} imports {private} from {node.module}"


def test_no_tool_switches_on_class_names_or_name_prefixes():
  """Tools read a model's family (models.info), never its class or a name prefix."""
  switch = re.compile(r"type\((model|module|m)\)\.__name__|\"(Bcos\w+|CifarNet9L)\"\s*:|"
                      r"isinstance\(\w+, (Bcos\w+|CifarNet9L)\)|startswith\(\"v1_\"\)")
  for folder in ("evaluate", "convert", "explain", "train"):
    for path in (PACKAGE / folder).glob("*.py"):
      assert not switch.search(path.read_text()), path
  assert switch.search('GRAD_CAM_LAYERS = {"BcosResNet": f}')  # what it catches
  assert switch.search("name = type(model).__name__")


def test_input_transforms():
  images = np.array([[[[0, 128, 255]]]], np.uint8)
  bcos = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), **SMALL["v1_cifar9l_b2"])
  x6 = models.input_transform(bcos)(images)
  chex.assert_trees_all_close(x6[0, 0, 0], jnp.array([0, 128 / 255, 1, 1, 127 / 255, 0]),
                              atol=1e-6)
  standard = models.create("standard_vitc_ti_patch1_14", rngs=nnx.Rngs(0),
                           **SMALL["standard_vitc_ti_patch1_14"])
  x3 = models.input_transform(standard)(images)
  expected = (np.array([0, 128, 255]) / 255 - np.array(nn.encoding.IMAGENET_MEAN)) / np.array(
      nn.encoding.IMAGENET_STD)
  chex.assert_trees_all_close(x3[0, 0, 0], jnp.asarray(expected, jnp.float32), atol=1e-6)
  chex.assert_trees_all_close(models.info(standard).encoding.to_rgb(x3), images / 255.0,
                              atol=1e-6)


def test_wrong_inputs_name_the_encoding_the_model_wants():
  bcos = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), **SMALL["v1_cifar9l_b2"])
  standard = models.create("standard_vitc_ti_patch1_14", rngs=nnx.Rngs(0),
                           **SMALL["standard_vitc_ti_patch1_14"])
  with pytest.raises(ValueError, match="add_inverse"):
    models.check_input(bcos, jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="normalize_rgb"):
    models.check_input(standard, jnp.zeros((1, 32, 32, 6)))
  with pytest.raises(ValueError, match="normalize_rgb"):
    standard(jnp.zeros((1, 32, 32, 6)))
  with pytest.raises(ValueError, match="not built by bcos_jax.models.create"):
    models.info(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_a_conventional_model_is_not_explained_as_if_it_were_bcos():
  standard = models.create("standard_vitc_ti_patch1_14", rngs=nnx.Rngs(0),
                           **SMALL["standard_vitc_ti_patch1_14"])
  x = models.input_transform(standard)(np.zeros((2, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="not a B-cos network.*input_x_gradient"):
    explain.explain(standard, x)
  chex.assert_shape(attribution.input_x_gradient(standard, x, jnp.array([0, 1])),
                    (2, 32, 32, 3))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_family_declares_a_grad_cam_layer_that_exists(name):
  model = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **SMALL[name]))
  layer = models.info(name).family.grad_cam_layer
  if layer is None:  # ViTs: no final feature map
    assert "vit" in name
    return
  path, side = layer(model)
  assert path in explain.module_paths(model) and side in ("input", "output")


def test_grad_cam_reads_a_vits_tokens_on_their_patch_grid():
  model = models.create("standard_vitc_ti_patch1_14", rngs=nnx.Rngs(0),
                        **SMALL["standard_vitc_ti_patch1_14"])
  x = models.input_transform(model)(
      jax.random.randint(jax.random.key(0), (2, 32, 32, 3), 0, 256).astype(jnp.uint8))
  cam = attribution.grad_cam(model, x, jnp.array([1, 2]), layer="encoders.0", side="output")
  chex.assert_shape(cam, (2, 32, 32, 1))
  assert bool(jnp.all(cam >= 0)) and float(cam.max()) > 0


def test_eval_mode_is_a_view_with_running_statistics_and_every_branch():
  model = models.create("resnet18", rngs=nnx.Rngs(0), stochastic_depth_prob=0.5,
                        **SMALL["resnet18"])
  viewed = models.eval_mode(model)
  assert viewed.bn1.use_running_average and viewed.stages[1][0].drop_path.deterministic
  assert not model.bn1.use_running_average  # the model itself is unchanged
  assert viewed.bn1.running_var is model.bn1.running_var  # the variables are shared


def test_the_logit_prior_default_is_said_once():
  assert nn.uniform_prior_bias(1000) == pytest.approx(-np.log(999))
  for name in ("resnet18", "densenet121", "vgg11_bnu", "convnext_tiny", "vitc_ti_patch1_14"):
    model = nnx.eval_shape(lambda n=name: models.create(n, rngs=nnx.Rngs(0), **SMALL[n]))
    assert model.logit_layer.bias == pytest.approx(-np.log(9)), name
  standard = nnx.eval_shape(lambda: models.create(
      "standard_vitc_ti_patch1_14", rngs=nnx.Rngs(0), **SMALL["standard_vitc_ti_patch1_14"]))
  assert standard.logit_layer.bias == 0.0


def test_the_v1_scale_is_stated_as_its_divisor():
  for name, divisor in (("v1_resnet34", 100.0), ("v1_densenet121", 100.0),
                        ("v1_vgg11", 1000.0), ("v1_inception_v3", 200.0)):
    assert models.config_for(name).as_dict()["v1_scale_divisor"] == divisor
  conv = nnx.eval_shape(lambda: nn.BcosConv(16, 8, 3, v1_scale_divisor=1000.0,
                                            rngs=nnx.Rngs(0)))
  assert conv.scale == pytest.approx(3 * 4 / 1000)


def test_importing_the_library_changes_no_global_state():
  """No OpenCV thread count, no matplotlib backend, no absl flags are set by an import."""
  code = ("import cv2, matplotlib; threads = cv2.getNumThreads(); "
          "backend = matplotlib.get_backend()\n"
          "import bcos_jax.data.randaugment_v1, bcos_jax.evaluate, bcos_jax.explain, "
          "bcos_jax.train\n"
          "from absl import flags\n"
          "assert cv2.getNumThreads() == threads, 'opencv threads changed'\n"
          "assert matplotlib.get_backend() == backend, 'backend changed'\n"
          "assert not flags.FLAGS.is_parsed(), 'absl flags marked parsed'\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "XLA_FLAGS": ""})
  assert result.returncode == 0, result.stderr[-2000:]


def test_saving_a_figure_leaves_pyplot_alone(tmp_path):
  import matplotlib
  import matplotlib.pyplot as plt

  backend, figures = matplotlib.get_backend(), plt.get_fignums()
  rgba = np.zeros((2, 8, 8, 4), np.float32)
  explain.save_explanation_grid(tmp_path / "grid.png", np.zeros((2, 8, 8, 3), np.uint8), rgba)
  assert (tmp_path / "grid.png").stat().st_size > 0
  assert matplotlib.get_backend() == backend and plt.get_fignums() == figures


# Every ViT baseline, and one model per block type of the torchvision CNNs (all their
# depths are checked against the official key lists in tests/convert/test_bcosify.py).
_BASELINES = [n for n in models.names() if n.startswith("standard_") and "vit" in n]
_BASELINES += ["standard_resnet18", "standard_resnet50", "standard_densenet121"]


@pytest.mark.parametrize("name", _BASELINES)
def test_every_standard_baseline_takes_its_encoded_rgb(name):
  """Each baseline at its real size (abstractly): the encoded RGB batch gives logits."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0))))

  def logits_of(state, images):
    model = nnx.merge(graphdef, state)
    return model(models.input_transform(model)(images))

  logits = jax.eval_shape(logits_of, state, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.uint8))
  assert logits.shape == (2, 1000)


def test_evaluation_and_models_do_not_import_the_trainer():
  code = ("import sys, bcos_jax.evaluate, bcos_jax.models, bcos_jax.explain\n"
          "assert not [m for m in sys.modules if m.startswith('bcos_jax.train')], 'train imported'")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "XLA_FLAGS": ""})
  assert result.returncode == 0, result.stderr[-2000:]
