"""Official PyTorch state dicts -> bcos_jax models.

Each model family declares its official key map beside its code
(`bcos_jax.models.torch_keys`): which official key fills which NNX variable
and how the array is laid out (PyTorch is OIHW / (out, in); bcos_jax is
HWIO / (in, out)). `from_torch_state_dict` checks every key and shape and
reports all problems in one error.
"""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.models.torch_keys import Target

# Layout -> the axis permutation from the PyTorch array to the bcos_jax one.
_TO_JAX: dict[str, tuple[int, ...] | None] = {"conv": (2, 3, 1, 0), "dense": (1, 0), "same": None,
                                               "layer_scale": None}
# ... and back, for shapes: HWIO -> OIHW, (in, out) -> (out, in).
_TO_TORCH: dict[str, tuple[int, ...] | None] = {"conv": (3, 2, 0, 1), "dense": (1, 0),
                                                  "same": None, "layer_scale": None}


def _permute(shape: tuple[int, ...], perm: tuple[int, ...] | None) -> tuple[int, ...]:
  return shape if perm is None else tuple(shape[i] for i in perm)


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  if layout == "layer_scale":  # torch keeps (C, 1, 1) to broadcast over NCHW
    return (*shape, 1, 1)
  return _permute(shape, _TO_TORCH[layout])


class StateDictMismatchError(UserError):
  """A state dict that does not fit the model: lists every problem at once."""


def key_map(model: nnx.Module) -> dict[str, Target]:
  """The official key -> variable map of `model` (works on abstract models), as its
  family declares it, with the registered key prefix of its checkpoint."""
  found = models.info(model)
  return found.family.torch_keys(model, found.torch_prefix)


def _variable(model: nnx.Module, path: tuple[str | int, ...]) -> nnx.Variable:
  node = model
  for part in path:
    node = node[part] if isinstance(part, int) else getattr(node, part)
  return node


def expected_state_dict_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """The official key -> PyTorch shape that `model` expects."""
  shapes = {}
  for key, target in key_map(model).items():
    if target.path is None:
      shapes[key] = target.shape
      continue
    shape = tuple(_variable(model, target.path).get_value().shape)
    shapes[key] = _torch_shape(shape, target.layout)
  return shapes


def unmapped_variables(model: nnx.Module) -> list[tuple[str | int, ...]]:
  """Parameters and statistics of `model` that no official key fills (should be none).

  Random-number state (stochastic depth's stream) is not part of a checkpoint.
  """
  mapped = {target.path for target in key_map(model).values()}
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  return sorted((path for path, _ in nnx.to_flat_state(state) if path not in mapped), key=str)


def _problems(expected: Mapping[str, tuple[int, ...]],
              state_dict: Mapping[str, np.ndarray]) -> list[str]:
  problems = []
  missing = sorted(set(expected) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(expected))
  if missing:
    problems.append(f"missing keys: {missing}")
  if unexpected:
    problems.append(f"unexpected keys: {unexpected}")
  for key in sorted(set(expected) & set(state_dict)):
    shape = tuple(np.shape(state_dict[key]))
    if shape != expected[key]:
      problems.append(f"{key}: shape {shape}, the model expects {expected[key]}")
  return problems


def from_torch_state_dict(name: str, state_dict: Mapping[str, np.ndarray],
                          **overrides) -> nnx.Module:
  """Builds the registered model `name` with the official weights in `state_dict`.

  Args:
    name: a registered model name (see `bcos_jax.models.names()`).
    state_dict: official key -> array (NumPy or anything `np.asarray` takes).
    **overrides: model options, e.g. `num_classes`.

  Returns:
    The model, with float32 parameters, in evaluation mode (norm layers use
    their running statistics; `nnx.view(model, use_running_average=False)`
    to fine-tune).

  Raises:
    StateDictMismatchError: listing every missing, unexpected or mis-shaped key.
  """
  abstract = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **overrides))
  expected = expected_state_dict_shapes(abstract)
  problems = _problems(expected, state_dict)
  if problems:
    raise StateDictMismatchError(
        f"the state dict does not fit model {name!r} ({len(problems)} problem(s)):\n  "
        + "\n  ".join(problems)
        + "\nCheck that the checkpoint is of this architecture and that num_classes matches.")
  unmapped = unmapped_variables(abstract)
  if unmapped:  # a bug in the key map, not in the user's file
    raise RuntimeError(f"the key map of {name!r} leaves variables unset: {unmapped}")
  # Fill the abstract model: every parameter comes from the state dict, so no
  # random initialisation runs (that matters for 100M-parameter models). Only
  # random-number streams (stochastic depth for fine-tuning) need a real model.
  if nnx.state(abstract, nnx.RngState):
    abstract = models.create(name, rngs=nnx.Rngs(0), **overrides)
  for key, target in key_map(abstract).items():
    if target.path is None:
      continue
    value = np.asarray(state_dict[key], dtype=np.float32)
    if _TO_JAX[target.layout] is not None:
      value = np.transpose(value, _TO_JAX[target.layout])
    if target.layout == "layer_scale":
      value = value.reshape(-1)
    _variable(abstract, target.path).set_value(jnp.asarray(value))
  # Imported weights are for inference: norm layers use their running statistics.
  return models.eval_mode(abstract)


def to_torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
  """The official (PyTorch-layout) state dict of `model`: the inverse of
  `from_torch_state_dict`. Buffers bcos_jax does not keep are written as the
  official code initialises them (running means 0, `num_batches_tracked` 0)."""
  state_dict = {}
  for key, target in key_map(model).items():
    if target.path is None:
      dtype = np.int64 if key.endswith("num_batches_tracked") else np.float32
      state_dict[key] = np.zeros(target.shape, dtype)
      continue
    value = np.asarray(_variable(model, target.path).get_value(), np.float32)
    if target.layout == "layer_scale":
      value = value.reshape(*value.shape, 1, 1)
    elif _TO_TORCH[target.layout] is not None:
      value = np.transpose(value, _TO_TORCH[target.layout])
    state_dict[key] = value
  return state_dict
