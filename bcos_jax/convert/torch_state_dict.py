"""Official PyTorch state dicts -> bcos_jax models.

A key map says, for one model, which official key fills which NNX variable
and how the array is laid out (PyTorch is OIHW / (out, in); bcos_jax is
HWIO / (in, out)). `from_torch_state_dict` checks every key and shape and
reports all problems in one error.
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bcos_jax import models
from bcos_jax.models.cifar import CifarNet9L
from bcos_jax.models.convnext import BcosConvNeXt
from bcos_jax.models.densenet import BcosDenseNet
from bcos_jax.models.inception import BcosInceptionV3
from bcos_jax.models.resnet import BcosResNet
from bcos_jax.models.vgg import BcosVGG
from bcos_jax.models.vit import BcosSimpleViT
from bcos_jax.nn import BcosConv, BcosDense
from bcos_jax.nn.norms import BatchNorm


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


class StateDictMismatchError(ValueError):
  """A state dict that does not fit the model: lists every problem at once."""


def _cifar9l_keys(model: CifarNet9L) -> dict[str, Target]:
  return {f"{i}.linear.weight": Target(("layers", i, "kernel"), "conv")
          for i in range(len(model.layers))}


def _conv_keys(prefix: str, path: tuple) -> dict[str, Target]:
  return {f"{prefix}.linear.weight": Target((*path, "kernel"), "conv")}


def _norm_keys(prefix: str, path: tuple, norm) -> dict[str, Target]:
  """The official keys of a norm layer (none for an absent one)."""
  keys = {}
  if norm is None:
    return keys
  if norm.scale is not None:
    keys[f"{prefix}.weight"] = Target((*path, "scale"), "same")
  if norm.bias is not None:
    keys[f"{prefix}.bias"] = Target((*path, "bias"), "same")
  if isinstance(norm, BatchNorm):
    keys[f"{prefix}.running_var"] = Target((*path, "running_var"), "same")
    keys[f"{prefix}.running_mean"] = Target(None, "same", (norm.features,))
    keys[f"{prefix}.num_batches_tracked"] = Target(None, "same", ())
  return keys


def _conv_norm_keys(conv_prefix: str, norm_prefix: str, path: tuple, unit) -> dict:
  keys = _conv_keys(conv_prefix, (*path, "conv"))
  if unit.norm is not None:
    keys |= _norm_keys(norm_prefix, (*path, "norm"), unit.norm)
  return keys


def _v1_prefix(model: nnx.Module) -> str:
  """v1 checkpoints hold the network as the first module of a Sequential."""
  config = getattr(model, "config", None)
  return "0." if config is not None and config.name.startswith("v1_") else ""


def _resnet_keys(model: BcosResNet) -> dict[str, Target]:
  p = _v1_prefix(model)
  keys = _conv_keys(f"{p}conv1", ("conv1",))
  if model.bn1 is not None:
    keys |= _norm_keys(f"{p}bn1", ("bn1",), model.bn1)
  for s, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      prefix, path = f"{p}layer{s + 1}.{j}", ("stages", s, j)
      for n, name in enumerate(("conv1", "conv2", "conv3")):
        if hasattr(block, name):
          keys |= _conv_norm_keys(f"{prefix}.{name}", f"{prefix}.bn{n + 1}", (*path, name),
                                  getattr(block, name))
      if block.downsample is not None:
        keys |= _conv_norm_keys(f"{prefix}.downsample.0", f"{prefix}.downsample.1",
                                (*path, "downsample"), block.downsample)
  return keys | _conv_keys(f"{p}fc", ("fc",))


def _densenet_keys(model: BcosDenseNet) -> dict[str, Target]:
  p = _v1_prefix(model)
  keys = _conv_keys(f"{p}features.conv0", ("conv0",))
  keys |= _norm_keys(f"{p}features.norm0", ("norm0",), model.norm0)
  for b, block in enumerate(model.blocks):
    for j, layer in enumerate(block):
      prefix, path = f"{p}features.denseblock{b + 1}.denselayer{j + 1}", ("blocks", b, j)
      for n in (1, 2):
        keys |= _norm_keys(f"{prefix}.norm{n}", (*path, f"norm{n}"), getattr(layer, f"norm{n}"))
        keys |= _conv_keys(f"{prefix}.conv{n}", (*path, f"conv{n}"))
  for t, transition in enumerate(model.transitions):
    prefix = f"{p}features.transition{t + 1}"
    keys |= _norm_keys(f"{prefix}.norm", ("transitions", t, "norm"), transition.norm)
    keys |= _conv_keys(f"{prefix}.conv", ("transitions", t, "conv"))
  keys |= _norm_keys(f"{p}features.norm5", ("norm5",), model.norm5)
  return keys | _conv_keys(f"{p}classifier", ("classifier",))


def _vgg_keys(model: BcosVGG) -> dict[str, Target]:
  p = _v1_prefix(model)
  keys, index, blocks = {}, 0, iter(enumerate(model.blocks))
  for entry in model.layers:  # torch's Sequential: conv, norm per conv; one pooling per "M"
    if entry == "M":
      index += 1
      continue
    b, block = next(blocks)
    keys |= _conv_keys(f"{p}features.{index}", ("blocks", b, "conv"))
    index += 1
    if block.norm is not None:
      keys |= _norm_keys(f"{p}features.{index}", ("blocks", b, "norm"), block.norm)
      index += 1
  for i in range(len(model.classifier)):
    keys |= _conv_keys(f"{p}classifier.{i}", ("classifier", i))
  return keys


def _convnext_keys(model: BcosConvNeXt) -> dict[str, Target]:
  keys = _conv_keys("features.0", ("stem",)) | _norm_keys("features.1", ("stem_norm",),
                                                          model.stem_norm)
  index = 2  # torch's features: stem conv, stem norm, then stage, downsample, stage, ...
  for s, stage in enumerate(model.stages):
    for j, block in enumerate(stage):
      prefix, path = f"features.{index}.{j}", ("stages", s, j)
      keys[f"{prefix}.layer_scale"] = Target((*path, "layer_scale"), "layer_scale")
      keys |= _conv_keys(f"{prefix}.block.0", (*path, "dwconv"))
      keys |= _norm_keys(f"{prefix}.block.1", (*path, "norm"), block.norm)
      keys |= _conv_keys(f"{prefix}.block.2", (*path, "pwconv1"))
      keys |= _conv_keys(f"{prefix}.block.3", (*path, "pwconv2"))
    index += 1
    if s < len(model.downsamples):
      down = model.downsamples[s]
      keys |= _norm_keys(f"features.{index}.0", ("downsamples", s, "norm"), down.norm)
      keys |= _conv_keys(f"features.{index}.1", ("downsamples", s, "conv"))
      index += 1
  keys |= _norm_keys("classifier.0", ("head_norm",), model.head_norm)
  return keys | _conv_keys("classifier.1", ("head",))


def _inception_keys(model: BcosInceptionV3) -> dict[str, Target]:
  # Module paths are the official names (Mixed_6[i] is Mixed_6b..e); the
  # official BasicConv2d wraps each conv as ".conv", except the classifiers.
  keys = {}
  for path, module in nnx.iter_modules(model):
    if not isinstance(module, BcosConv):
      continue
    name = ".".join(f"{p}{'bcde'[path[i + 1]]}" if p == "Mixed_6" else str(p)
                    for i, p in enumerate(path) if not (i and path[i - 1] == "Mixed_6"))
    wrapper = "" if path[-1] == "fc" else ".conv"
    keys |= _conv_keys(f"0.{name}{wrapper}", path)
  return keys


def _linear_keys(prefix: str, path: tuple, layer) -> dict[str, Target]:
  """A B-cos linear map (`prefix.linear.weight`) or a baseline's nn.Linear."""
  if isinstance(layer, BcosDense):
    return {f"{prefix}.linear.weight": Target((*path, "kernel"), "dense")}
  keys = {f"{prefix}.weight": Target((*path, "linear", "kernel"), "dense")}
  if layer.linear.bias is not None:
    keys[f"{prefix}.bias"] = Target((*path, "linear", "bias"), "same")
  return keys


def _vit_keys(model: BcosSimpleViT) -> dict[str, Target]:
  p = "0." if model.bcos else ""  # the B-cos hub model is Sequential(vit, logit layer)
  keys = {}
  for i, layer in enumerate(model.stem):
    conv, norm = f"{p}to_patch_embedding.conv_stem.{3 * i}", (f"{p}to_patch_embedding."
                                                             f"conv_stem.{3 * i + 1}")
    if model.bcos:
      keys |= _conv_keys(conv, ("stem", i, "conv"))
    else:
      keys[f"{conv}.weight"] = Target(("stem", i, "conv", "kernel"), "conv")
      keys[f"{conv}.bias"] = Target(("stem", i, "conv", "bias"), "same")
    keys |= _norm_keys(norm, ("stem", i, "norm"), layer.norm)
  keys |= _linear_keys(f"{p}to_patch_embedding.linear", ("patch_embedding",),
                       model.patch_embedding)
  for i, encoder in enumerate(model.encoders):
    prefix, path = f"{p}transformer.encoder_{i}", ("encoders", i)
    keys |= _norm_keys(f"{prefix}.attn.norm", (*path, "attn", "norm"), encoder.attn.norm)
    keys[f"{prefix}.attn.to_qkv.weight"] = Target((*path, "attn", "to_qkv", "kernel"), "dense")
    keys |= _linear_keys(f"{prefix}.attn.to_out", (*path, "attn", "to_out"), encoder.attn.to_out)
    keys |= _norm_keys(f"{prefix}.ff.net.norm", (*path, "ff", "norm"), encoder.ff.norm)
    for name in ("linear1", "linear2"):
      keys |= _linear_keys(f"{prefix}.ff.net.{name}", (*path, "ff", name),
                           getattr(encoder.ff, name))
  keys |= _norm_keys(f"{p}linear_head.norm", ("head_norm",), model.head_norm)
  return keys | _linear_keys(f"{p}linear_head.linear", ("head",), model.head)


# Model class -> its key map. The zoo's families add theirs here.
KEY_MAPS: dict[type, Callable[[nnx.Module], dict[str, Target]]] = {
    CifarNet9L: _cifar9l_keys,
    BcosResNet: _resnet_keys,
    BcosSimpleViT: _vit_keys,
    BcosDenseNet: _densenet_keys,
    BcosVGG: _vgg_keys,
    BcosConvNeXt: _convnext_keys,
    BcosInceptionV3: _inception_keys,
}


def key_map(model: nnx.Module) -> dict[str, Target]:
  """The official key -> variable map of `model` (works on abstract models)."""
  for model_class, make in KEY_MAPS.items():
    if isinstance(model, model_class):
      return make(model)
  raise ValueError(f"no PyTorch key map for {type(model).__name__}; "
                   f"known: {', '.join(c.__name__ for c in KEY_MAPS)}")


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
  return nnx.view(abstract, use_running_average=True, deterministic=True,
                  raise_if_not_found=False)
