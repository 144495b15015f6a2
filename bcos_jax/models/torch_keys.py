"""The vocabulary in which each model family declares its official PyTorch keys.

A family's key map says, for one model, which official state-dict key fills
which NNX variable and how the array is laid out (PyTorch is OIHW /
(out, in); bcos_jax is HWIO / (in, out)). The maps live beside each
architecture (the attribute names follow the official module names) and
are registered with the family; `bcos_jax.convert` only reads them.
"""

import dataclasses
from collections.abc import Callable

from flax import nnx

from bcos_jax.nn.bcos_dense import BcosDense
from bcos_jax.nn.norms import BatchNorm
from bcos_jax.nn.standard_layers import StandardConv


@dataclasses.dataclass(frozen=True)
class Target:
  """Where an official array goes: a variable path and a layout change.

  `path=None` marks an official buffer that bcos_jax does not need (the
  running mean of an uncentered BatchNorm, `num_batches_tracked`): it must be
  present, and its shape is checked against `shape`.
  """
  path: tuple[str | int, ...] | None
  layout: str  # "conv" (OIHW -> HWIO), "dense" ((out, in) -> (in, out)), "same" or
  # "layer_scale" ((C, 1, 1) -> (C,)).
  shape: tuple[int, ...] | None = None  # for path=None only


KeyMap = dict[str, Target]
# (model, the registered key prefix, e.g. "0." for the v1 checkpoints) -> its key map.
KeyMapFn = Callable[[nnx.Module, str], KeyMap]


def conv_keys(prefix: str, path: tuple, layer: nnx.Module | None = None) -> KeyMap:
  """A B-cos conv (the official `BcosConv2d` keeps its kernel in `.linear`; a learned B
  is `.b`) or, for a `StandardConv` `layer`, torch's `Conv2d` (`.weight`, `.bias`)."""
  if isinstance(layer, StandardConv):
    keys = {f"{prefix}.weight": Target((*path, "kernel"), "conv")}
    if layer.bias is not None:
      keys[f"{prefix}.bias"] = Target((*path, "bias"), "same")
    return keys
  keys = {f"{prefix}.linear.weight": Target((*path, "kernel"), "conv")}
  if getattr(layer, "bias", None) is not None:
    keys[f"{prefix}.linear.bias"] = Target((*path, "bias"), "same")
  if getattr(layer, "learned_b", None) is not None:
    keys[f"{prefix}.b"] = Target((*path, "learned_b"), "same")
  return keys


def norm_keys(prefix: str, path: tuple, norm: nnx.Module | None) -> KeyMap:
  """The official keys of a norm layer (none for an absent one)."""
  keys = {}
  if norm is None:
    return keys
  if norm.scale is not None:
    keys[f"{prefix}.weight"] = Target((*path, "scale"), "same")
  if norm.bias is not None:
    keys[f"{prefix}.bias"] = Target((*path, "bias"), "same")
  if isinstance(norm, BatchNorm):
    # In torch's order. The uncentered layer keeps the official running mean but
    # never reads it.
    keys[f"{prefix}.running_mean"] = (Target(None, "same", (norm.features,))
                                      if norm.running_mean is None
                                      else Target((*path, "running_mean"), "same"))
    keys[f"{prefix}.running_var"] = Target((*path, "running_var"), "same")
    keys[f"{prefix}.num_batches_tracked"] = Target(None, "same", ())
  return keys


def conv_norm_keys(conv_prefix: str, norm_prefix: str, path: tuple, unit) -> KeyMap:
  """A `bcos_jax.nn.ConvNorm`: its conv and (if any) its norm."""
  return (conv_keys(conv_prefix, (*path, "conv"), unit.conv)
          | norm_keys(norm_prefix, (*path, "norm"), unit.norm))


def linear_keys(prefix: str, path: tuple, layer) -> KeyMap:
  """A B-cos linear map (`prefix.linear.weight`) or a baseline's nn.Linear (with bias)."""
  if isinstance(layer, BcosDense):
    return {f"{prefix}.linear.weight": Target((*path, "kernel"), "dense")}
  keys = {f"{prefix}.weight": Target((*path, "linear", "kernel"), "dense")}
  if layer.linear.bias is not None:
    keys[f"{prefix}.bias"] = Target((*path, "linear", "bias"), "same")
  return keys
