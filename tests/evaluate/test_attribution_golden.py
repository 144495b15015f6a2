"""Every post-hoc method against the official v2 explainers on the v2 ResNet-18.

`tests/golden/attribution_resnet18.npz` holds the official outputs (captum 0.9,
the v2 `Occlusion`, `RISE` and `GradCam` explainers) for two 64×64 images and a
112×112 photograph (scikit-image's astronaut); see ../shared/golden/README.md.
"""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from golden_weights import assert_close, load, official_state_dict

from bcos_jax import convert
from bcos_jax.evaluate import attribution

GOLDEN = load("attribution_resnet18.npz")


@pytest.fixture(scope="module")
def model():
  return convert.from_torch_state_dict("resnet18",
                                       official_state_dict(load(GOLDEN["source"].item())))


def _nhwc(array):
  return jnp.asarray(np.transpose(array, (0, 2, 3, 1)))


# name in the golden file -> our method. On this network without ReLUs or max-pooling,
# captum's DeepLIFT and Guided Backprop reduce to Input×Gradient and the gradient; ours must
# too (tests/evaluate/test_backward_rules.py checks them where they do not).
METHODS = {
    "grad": attribution.gradient,
    "ixg": attribution.input_x_gradient,
    "deeplift": attribution.deeplift,
    "gb": attribution.guided_backprop,
    "intgrad": attribution.integrated_gradients,
    "gradcam": attribution.grad_cam,
    "occ9_ti": attribution.METHODS["occ9_ti"],
    "occ13_ti": attribution.METHODS["occ13_ti"],
    "occ16_8": functools.partial(attribution.occlusion, kernel=16, stride=8),
    "rise": attribution.rise,
}
# The two dense presets (1,024 masks each) on the first image only, to keep CI short.
DENSE = {"occ5": attribution.METHODS["occ5"], "occ9": attribution.METHODS["occ9"]}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_matches_the_official_explainer(model, name):
  result = METHODS[name](model, _nhwc(GOLDEN["x6"]), jnp.asarray(GOLDEN["targets"]))
  assert_close(result, np.transpose(GOLDEN[name], (0, 2, 3, 1)), name=name)


@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_occlusion_presets_match_the_official_explainer(model, name):
  result = DENSE[name](model, _nhwc(GOLDEN["x6"][:1]), jnp.asarray(GOLDEN["targets"][:1]))
  assert_close(result, np.transpose(GOLDEN[name][:1], (0, 2, 3, 1)), name=name)


@pytest.mark.parametrize("name, method", [("photo_rise", attribution.rise),
                                          ("photo_occ9_ti", attribution.METHODS["occ9_ti"])])
def test_a_photograph_matches_the_official_explainer(model, name, method):
  target = jnp.asarray([int(GOLDEN["photo_target"])])
  result = method(model, _nhwc(GOLDEN["photo_x6"]), target)
  assert_close(result[..., 0], GOLDEN[name], name=name)


def test_lime_chooses_the_official_superpixels(model):
  """Draw for draw lime's LimeImageExplainer after np.random.seed(1234): the two images
  one after the other from one stream, then the photograph from a fresh one."""
  result = attribution.lime(model, _nhwc(GOLDEN["x6"]), jnp.asarray(GOLDEN["targets"]),
                            seed=1234)
  np.testing.assert_array_equal(np.asarray(result)[..., 0], GOLDEN["lime"][:, 0])
  photo = attribution.lime(model, _nhwc(GOLDEN["photo_x6"]),
                           jnp.asarray([int(GOLDEN["photo_target"])]), seed=1234)
  np.testing.assert_array_equal(np.asarray(photo)[..., 0], GOLDEN["photo_lime"])
