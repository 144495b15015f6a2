"""B-cosification (Arya, Rao, Böhle, Schiele, NeurIPS 2024): conventional networks -> B-cos.

A pretrained torchvision ResNet or DenseNet becomes a B-cos network that
fine-tunes to its accuracy in a fraction of a from-scratch run, exactly as
the official `experiments/ImageNet/bcosification` converts it:
- the first conv (the only one with 3 input channels) takes the 6-channel
  encoding: its kernel becomes [w, -w] / 2, and the model normalises the
  [r, g, b, 1-r, 1-g, 1-b] input with the ImageNet statistics itself;
- every conv becomes a B-cos conv (B = 2) over the *raw* pretrained kernel;
- every BatchNorm becomes uncentered, and every bias is dropped;
- ReLU stays; the stem's max-pool becomes a 3×3/2 average pool;
- the linear classifier becomes a 1×1 B-cos conv applied before global
  average pooling, and the logits get the bias -log(C - 1).

The conversion is a map between state dicts in torch's vocabulary, from
torchvision's keys to those of the official `BcosifyNetwork`, so a
B-cosified checkpoint of the official code loads with `from_torch_state_dict`
too. The options the official configs vary are arguments: B, a learned B,
keeping the biases (folded into the uncentered BatchNorm as the official
`BnUncV2` does), and the ReLU ablation.
"""

from collections.abc import Mapping

import numpy as np
from flax import nnx

from bcos_jax import models
from bcos_jax.convert.torch_state_dict import (
    StateDictMismatchError,
    expected_state_dict_shapes,
    from_torch_state_dict,
    to_torch_state_dict,
)
from bcos_jax.errors import UserError
from bcos_jax.models.conventional import BCOSIFIED_TORCH_PREFIX
from bcos_jax.nn.norms import EPS

# Conventional architecture -> its registered models (torchvision's and B-cosified).
ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "densenet121", "densenet161", "densenet169", "densenet201")
STANDARD_PREFIX, BCOSIFIED_PREFIX = "standard_", "bcosified_"
# The builder arguments that shape a network: a conventional model's carry
# over to its B-cosified version (its other options are the family's).
ARCHITECTURE_OPTIONS = ("block", "layers", "num_classes", "stem_width", "groups",
                        "width_per_group", "small_inputs", "growth_rate", "block_config",
                        "bn_size")


def _num_classes(state_dict: Mapping[str, np.ndarray]) -> int:
  """The outputs of the classifier: the one 2-D weight of a torchvision CNN."""
  linear = [k for k, v in state_dict.items() if k.endswith(".weight") and np.ndim(v) == 2]
  if len(linear) != 1:
    raise StateDictMismatchError(
        f"expected one linear classifier (a 2-D '.weight') in a torchvision ResNet or "
        f"DenseNet state dict, found {len(linear)}: {linear[:5]}")
  return int(np.shape(state_dict[linear[0]])[0])


def _fits(name: str, state_dict: Mapping[str, np.ndarray], architecture) -> list[str]:
  """The problems of loading `state_dict` into model `name` (empty: it fits)."""
  options = {"num_classes": _num_classes(state_dict), **architecture}
  try:
    models.config_for(name, **options)
  except UserError as error:  # e.g. a DenseNet's growth_rate given to a ResNet
    return [str(error)]
  abstract = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **options))
  expected = expected_state_dict_shapes(abstract)
  problems = [f"missing {k}" for k in sorted(set(expected) - set(state_dict))]
  problems += [f"unexpected {k}" for k in sorted(set(state_dict) - set(expected))]
  problems += [f"{k}: shape {tuple(np.shape(state_dict[k]))}, expected {expected[k]}"
               for k in sorted(set(expected) & set(state_dict))
               if tuple(np.shape(state_dict[k])) != expected[k]]
  return problems


def identify_architecture(state_dict: Mapping[str, np.ndarray], **architecture) -> str:
  """The torchvision architecture (e.g. "resnet50") whose keys and shapes `state_dict` has
  (with the `ARCHITECTURE_OPTIONS` in `architecture`, if it is a variant).

  Raises:
    StateDictMismatchError: if it is none of `ARCHITECTURES`; the message lists
      the mismatches of the closest one.
  """
  problems = {arch: _fits(STANDARD_PREFIX + arch, state_dict, architecture)
              for arch in ARCHITECTURES}
  for arch, found in problems.items():
    if not found:
      return arch
  closest = min(problems, key=lambda arch: len(problems[arch]))
  listed = problems[closest]
  raise StateDictMismatchError(
      f"the state dict is no torchvision {', '.join(ARCHITECTURES)}; closest is {closest} "
      f"with {len(listed)} problem(s):\n  " + "\n  ".join(listed[:20])
      + ("" if len(listed) <= 20 else f"\n  ... and {len(listed) - 20} more"))


def bcosified_state_dict(state_dict: Mapping[str, np.ndarray], *, keep_biases: bool = False,
                         learn_b: float | None = None) -> dict[str, np.ndarray]:
  """A torchvision ResNet/DenseNet state dict -> the official `BcosifyNetwork`'s.

  Args:
    state_dict: torchvision keys (`conv1.weight`, `bn1.running_var`, `fc.weight`, ...).
    keep_biases: keep the BatchNorm biases, folded as `bias - mean / std · weight`
      (the uncentered layer then equals the centered one), and the classifier's.
    learn_b: when set, adds each conv's learnable B (`<conv>.b`) at this value.

  Returns:
    The B-cosified state dict (keys under `model.`): conv kernels as
    `<conv>.linear.weight` (the first one [w, -w] / 2 over 6 channels, the
    classifier as a 1×1 kernel), BatchNorm weights and running statistics.
  """
  norms = {k.removesuffix(".running_var") for k in state_dict if k.endswith(".running_var")}
  out: dict[str, np.ndarray] = {}
  first_convs = []

  def put(key: str, value) -> None:
    out[BCOSIFIED_TORCH_PREFIX + key] = np.asarray(value)

  for key, value in state_dict.items():
    module, _, field = key.rpartition(".")
    value = np.asarray(value)
    if module in norms:
      if field == "bias":
        if keep_biases:
          std = np.sqrt(np.asarray(state_dict[f"{module}.running_var"], np.float64) + EPS)
          folded = value - np.asarray(state_dict[f"{module}.running_mean"]) / std * np.asarray(
              state_dict[f"{module}.weight"])
          put(key, folded.astype(np.float32))
      else:  # weight, running_mean (kept, unused), running_var, num_batches_tracked
        put(key, value)
      continue
    if field == "weight" and value.ndim in (2, 4):
      if value.ndim == 2:  # the classifier, applied as a 1×1 conv before pooling
        value = value.reshape(*value.shape, 1, 1)
      elif value.shape[1] == 3:  # the first conv: 6 input channels
        first_convs.append(key)
        value = np.concatenate([value, -value], axis=1) / 2
      put(f"{module}.linear.weight", value)
      if learn_b is not None:
        put(f"{module}.b", np.float32(learn_b))
    elif field == "bias":
      if keep_biases:
        put(f"{module}.linear.bias", value)
    else:
      raise StateDictMismatchError(f"{key}: neither a conv, a linear nor a BatchNorm array; "
                                   "is this a torchvision ResNet or DenseNet state dict?")
  if len(first_convs) != 1:
    raise StateDictMismatchError(
        f"expected exactly one conv with 3 input channels (the stem), found {first_convs}")
  return out


def bcosify(source: nnx.Module | Mapping[str, np.ndarray], *, arch: str | None = None,
            b: float = 2.0, learn_b: bool = False, keep_biases: bool = False,
            relu: bool = True, **architecture) -> nnx.Module:
  """B-cosifies a conventional network.

  Args:
    source: a conventional model (`standard_resnet50`, ... built or loaded by
      bcos_jax) or a torchvision state dict (e.g. from
      `bcos_jax.convert.torch_files.state_dict_from_file("resnet50-....pth")`).
    arch: the torchvision architecture of a state dict ("resnet50"); None
      identifies it from the keys and shapes.
    b: the alignment pressure of every B-cos conv (official: 2).
    learn_b: every conv learns its B, starting at `b` (an official ablation).
    keep_biases: keep the pretrained biases (an official ablation; the
      contributions then no longer sum to the logit).
    relu: keep the ReLUs (official); False replaces them by the identity.
    **architecture: for a state dict of a variant of the architecture, its
      `ARCHITECTURE_OPTIONS` (e.g. `stem_width=32`); a model's come with it.

  Returns:
    The `bcosified_<arch>` model in evaluation mode; it takes `add_inverse`
    images in [0, 1] and explains like every B-cos model.

  Raises:
    UserError: for a model that is already a B-cos network, an unknown
      architecture, or a state dict that does not fit it (every mismatch listed).
  """
  unknown = sorted(set(architecture) - set(ARCHITECTURE_OPTIONS))
  if unknown:
    raise UserError(f"unknown architecture option(s) {unknown}; known: "
                     f"{', '.join(ARCHITECTURE_OPTIONS)}")
  if isinstance(source, nnx.Module):
    found = models.info(source)
    if found.bcos:
      raise UserError(f"{found.name} is already a B-cos network; bcosify converts the "
                       f"conventional models ({STANDARD_PREFIX}<arch>: "
                       f"{', '.join(ARCHITECTURES)})")
    if not found.name.startswith(STANDARD_PREFIX) or \
        found.name.removeprefix(STANDARD_PREFIX) not in ARCHITECTURES:
      raise UserError(f"bcosify converts torchvision ResNets and DenseNets "
                       f"({', '.join(STANDARD_PREFIX + a for a in ARCHITECTURES)}), "
                       f"not {found.name}")
    arch = found.name.removeprefix(STANDARD_PREFIX)
    shape = {k: v for k, v in source.config.kwargs if k in ARCHITECTURE_OPTIONS}
    state_dict = to_torch_state_dict(source)
  else:
    state_dict = {k: np.asarray(v) for k, v in source.items()}
    shape = dict(architecture)
    if arch is None:
      arch = identify_architecture(state_dict, **architecture)
    elif arch not in ARCHITECTURES:
      raise UserError(f"unknown architecture {arch!r}; bcosify knows {', '.join(ARCHITECTURES)}")
    else:
      problems = _fits(STANDARD_PREFIX + arch, state_dict, architecture)
      if problems:
        raise StateDictMismatchError(
            f"the state dict is no torchvision {arch} ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems))
  overrides = dict(shape, b=b, num_classes=_num_classes(state_dict))
  if learn_b:
    overrides["learn_b"] = True
  if keep_biases:
    overrides.update(norm="BatchNormUncentered2d", head_bias=True)
  if not relu:
    overrides["activation"] = "none"
  converted = bcosified_state_dict(state_dict, keep_biases=keep_biases,
                                   learn_b=b if learn_b else None)
  return from_torch_state_dict(BCOSIFIED_PREFIX + arch, converted, **overrides)
