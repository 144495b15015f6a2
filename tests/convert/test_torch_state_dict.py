"""Import of official state dicts: golden logits, and clear errors for bad input."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from golden_weights import assert_close, load, official_state_dict

from bcos_jax import convert, models

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"
MANIFESTS = json.loads((GOLDEN / "manifests.json").read_text())
IMPORTABLE = sorted(name for name in MANIFESTS if name in models.names())


@pytest.mark.parametrize("name", ["v1_cifar9l_b2", "v1_cifar9l_b1.25"])
def test_imported_model_reproduces_official_logits(name):
  golden = load(f"model_{name}.npz")
  model = convert.from_torch_state_dict(name, official_state_dict(golden))
  logits = model(jnp.asarray(np.transpose(golden["x6"], (0, 2, 3, 1))))
  assert_close(logits, golden["logits"])
  # The bias dominates these logits: check what the weights add too.
  assert_close(logits - model.logit_layer.bias, golden["logits"] - model.logit_layer.bias)


def test_every_official_model_is_importable():
  assert IMPORTABLE == sorted(MANIFESTS)


@pytest.mark.parametrize("name", IMPORTABLE)
def test_official_manifest_maps_with_matching_shapes(name):
  """Every official key is mapped, with its shape (abstractly: no weights are made)."""
  model = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0)))
  expected = convert.expected_state_dict_shapes(model)
  assert expected == {key: tuple(shape) for key, shape, _ in MANIFESTS[name]}
  assert convert.unmapped_variables(model) == []


def _state_dict():
  return official_state_dict(load("model_v1_cifar9l_b2.npz"))


def test_mismatches_are_reported_together():
  state = _state_dict()
  del state["3.linear.weight"]
  state["9.linear.weight"] = np.zeros((4, 4, 1, 1), np.float32)
  state["8.linear.weight"] = np.zeros((20, 255, 1, 1), np.float32)
  with pytest.raises(convert.StateDictMismatchError) as error:
    convert.from_torch_state_dict("v1_cifar9l_b2", state)
  message = str(error.value)
  assert "missing keys: ['3.linear.weight']" in message
  assert "unexpected keys: ['9.linear.weight']" in message
  assert "8.linear.weight: shape (20, 255, 1, 1)" in message
  assert "3 problem(s)" in message


def test_inception_without_its_auxiliary_head():
  model = nnx.eval_shape(lambda: models.create("v1_inception_v3", rngs=nnx.Rngs(0),
                                               aux_logits=False))
  expected = {key: tuple(shape) for key, shape, _ in MANIFESTS["v1_inception_v3"]
              if "AuxLogits" not in key}
  assert convert.expected_state_dict_shapes(model) == expected


def test_wrong_number_of_classes_is_named():
  with pytest.raises(convert.StateDictMismatchError, match="num_classes"):
    convert.from_torch_state_dict("v1_cifar9l_b2", _state_dict(), num_classes=100)


def test_state_dict_of_another_architecture_is_rejected():
  other = {"conv1.weight": np.zeros((64, 6, 7, 7), np.float32)}
  with pytest.raises(convert.StateDictMismatchError, match="missing keys"):
    convert.from_torch_state_dict("v1_cifar9l_b2", other)
