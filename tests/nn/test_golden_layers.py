"""Parity of every layer with the official PyTorch implementations (v1 and v2)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from golden_weights import assert_close, load

from bcos_jax import nn

V1 = load("layers_v1.npz")
V2 = load("layers_v2.npz")


def _cases(data, prefix=""):
  return sorted({k.split("/")[0] for k in data if k.endswith("/config") and k.startswith(prefix)})


def _nchw_to_nhwc(a):
  return np.transpose(a, (0, 2, 3, 1))


def _nhwc_to_nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


def _run(layer, x, cotangent, explain):
  """Output and input gradient of a layer as a pure function (state not mutated)."""
  graphdef, state = nnx.split(layer)

  @jax.jit  # one compilation instead of one per primitive: much faster on CPU
  def run(state, x, cotangent):
    y, vjp = jax.vjp(lambda z: nnx.merge(graphdef, state)(z, explain=explain), x)
    return y, vjp(cotangent)[0]

  return run(nnx.as_pure(state), jnp.asarray(x), jnp.asarray(cotangent))


def _scale(config, v1) -> dict:
  """The official v1 conv with scale None divides by its default k·sqrt(in)/100."""
  if not v1:
    return {"scale": 1.0}
  return {"v1_scale_divisor": 100.0} if config["scale"] is None else {"scale": config["scale"]}


def _conv(config, weight, v1):
  # Built abstractly (no random initialisation to compile): the weights are set below.
  layer = nnx.eval_shape(lambda: nn.BcosConv(
      config["inc"], config["outc"], config["k"], strides=config["s"], padding=config["p"],
      dilation=config.get("d", 1), feature_group_count=config.get("groups", 1), b=config["b"],
      max_out=config["max_out"], rngs=nnx.Rngs(0), **_scale(config, v1)))
  layer.kernel.set_value(jnp.asarray(np.transpose(weight, (2, 3, 1, 0))))
  return layer


CONV_CASES = [("v1", case) for case in _cases(V1)] + [("v2", case) for case in _cases(V2, "conv_")]


@pytest.mark.parametrize("version, case", CONV_CASES)
def test_bcos_conv(version, case):
  data, v1 = (V1, True) if version == "v1" else (V2, False)
  config = json.loads(str(data[f"{case}/config"]))
  layer = _conv(config, data[f"{case}/weight"], v1=v1)
  if v1:
    assert layer.scale == pytest.approx(config["scale_used"])
  x, ct = _nchw_to_nhwc(data[f"{case}/x"]), _nchw_to_nhwc(data[f"{case}/cotangent"])
  y, grad = _run(layer, x, ct, explain=False)
  _, grad_explain = _run(layer, x, ct, explain=True)
  assert_close(_nhwc_to_nchw(y), data[f"{case}/y"], name="y")
  assert_close(_nhwc_to_nchw(grad), data[f"{case}/grad_x"], name="grad_x")
  assert_close(_nhwc_to_nchw(grad_explain), data[f"{case}/grad_x_explain"],
               name="grad_x_explain")


@pytest.mark.parametrize("case", _cases(V2, "linear_"))
def test_v2_bcos_linear(case):
  config = json.loads(str(V2[f"{case}/config"]))
  layer = nnx.eval_shape(lambda: nn.BcosDense(
      config["inc"], config["outc"], b=config["b"], max_out=config["max_out"], rngs=nnx.Rngs(0)))
  layer.kernel.set_value(jnp.asarray(V2[f"{case}/weight"].T))
  x, ct = V2[f"{case}/x"], V2[f"{case}/cotangent"]
  y, grad = _run(layer, x, ct, explain=False)
  _, grad_explain = _run(layer, x, ct, explain=True)
  assert_close(y, V2[f"{case}/y"], name="y")
  assert_close(grad, V2[f"{case}/grad_x"], name="grad_x")
  assert_close(grad_explain, V2[f"{case}/grad_x_explain"], name="grad_x_explain")


NORM_CASES = {
    "bn_uncentered_nobias": "NoBias(BatchNormUncentered2d)",
    "gn_layernorm_uncentered_nobias": "NoBias(GNLayerNormUncentered2d)",
    "positionnorm_uncentered_nobias": "NoBias(PositionNormUncentered2d)",
    "detachable_layernorm_nobias": "NoBias(DetachableLayerNorm)",
    "detachable_gn_layernorm_nobias": "NoBias(DetachableGNLayerNorm2d)",
    "detachable_positionnorm_nobias": "NoBias(DetachablePositionNorm2d)",
}


def test_every_golden_norm_case_is_covered():
  cases = {k.split("/")[0] for k in V2 if k.endswith("/state_dict")}
  assert cases == set(NORM_CASES)


def _norm(case, phase):
  state = json.loads(str(V2[f"{case}/state_dict"]))
  x = V2[f"{case}/x"]
  image = x.ndim == 4
  layer = nn.make_norm(NORM_CASES[case], x.shape[1] if image else x.shape[-1])
  assert layer.bias is None  # NoBias
  layer.scale[...] = jnp.asarray(state["weight"], jnp.float32)
  if "running_var" in state:
    layer.running_var[...] = jnp.asarray(state["running_var"], jnp.float32)
    layer.use_running_average = phase == "eval"
  to_nhwc = _nchw_to_nhwc if image else np.asarray
  from_nhwc = _nhwc_to_nchw if image else np.asarray
  return layer, to_nhwc, from_nhwc


@pytest.mark.parametrize("phase", ["eval", "train"])
@pytest.mark.parametrize("case", sorted(NORM_CASES))
def test_v2_norm_layers(case, phase):
  layer, to_nhwc, from_nhwc = _norm(case, phase)
  x, ct = to_nhwc(V2[f"{case}/x"]), to_nhwc(V2[f"{case}/cotangent"])
  y, grad = _run(layer, x, ct, explain=False)
  _, grad_explain = _run(layer, x, ct, explain=True)
  assert_close(from_nhwc(y), V2[f"{case}/{phase}/y"], name="y")
  assert_close(from_nhwc(grad), V2[f"{case}/{phase}/grad_x"], name="grad_x")
  assert_close(from_nhwc(grad_explain), V2[f"{case}/{phase}/grad_x_explain"],
               name="grad_x_explain")


def test_batchnorm_running_variance_after_one_training_step():
  case = "bn_uncentered_nobias"
  layer, to_nhwc, _ = _norm(case, "train")
  layer(jnp.asarray(to_nhwc(V2[f"{case}/x"])))
  assert_close(layer.running_var[...], V2[f"{case}/train/running_var_after_one_step"])


def test_logit_layer():
  layer = nn.LogitLayer(temperature=0.5, bias=-np.log(9))
  assert_close(layer(jnp.asarray(V2["logit_layer_t0.5_b-log9/x"])),
               V2["logit_layer_t0.5_b-log9/y"])
