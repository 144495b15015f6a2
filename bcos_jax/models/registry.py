"""Models by name: families declare what tools need, names declare their constants.

A *family* (one per model file) is a model class together with what every
tool needs to know about it: how it wants its input, whether it is a B-cos
network (its explanations exact), where Grad-CAM reads its last feature map,
its official PyTorch key map, its auxiliary head. A registry *entry* is a
name, its family and the builder arguments that define the named model,
constants included (layer scales, logit temperature and bias), plus the key
prefix of its official checkpoint.

`create` records the final arguments in `model.config`, so a model (and a
checkpoint that stores the config) always says exactly what it is, and
`bcos_jax.models.info(model)` finds its family from the name.
"""

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models.torch_keys import KeyMapFn
from bcos_jax.nn.encoding import INPUT_ENCODINGS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The registry name and the builder arguments of a model (hashable)."""
  name: str
  kwargs: tuple[tuple[str, Any], ...]

  def as_dict(self) -> dict[str, Any]:
    return {"name": self.name, **dict(self.kwargs)}


@dataclasses.dataclass(frozen=True)
class Family:
  """A model class and what tools need to know about it, declared beside its code.

  Attributes:
    name: the family's name (e.g. "resnet"), for messages.
    model_class: the NNX module class; `model_class(**kwargs, rngs=...)`.
    torch_keys: (model, key prefix) -> the official key map (`torch_keys.Target`s).
    grad_cam_layer: model -> (submodule path, "input" or "output"): where
      Grad-CAM reads the last feature map; None for families without one (ViTs).
    input_encoding: a `bcos_jax.nn.INPUT_ENCODINGS` name.
    bcos: whether the model is a B-cos network (y = W(x)·x, exact explanations);
      False for the conventional baselines.
    aux_head: the attribute holding an auxiliary classifier (Inception-v3's
      `AuxLogits`; the model then has `logits_with_aux`), or None.
    converted: the models are made by converting a trained network (the
      B-cosified ones): training starts from `config.init_from`, never from
      a random initialisation.
    defaults: builder arguments shared by every entry of the family.
  """
  name: str
  model_class: Callable[..., nnx.Module]
  torch_keys: KeyMapFn
  grad_cam_layer: Callable[[nnx.Module], tuple[str, str]] | None = None
  input_encoding: str = "add_inverse"
  bcos: bool = True
  aux_head: str | None = None
  converted: bool = False
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.input_encoding not in INPUT_ENCODINGS:
      raise ValueError(f"family {self.name!r}: unknown input encoding {self.input_encoding!r};"
                       f" known: {', '.join(INPUT_ENCODINGS)}")


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered name: its family, its builder arguments, its official key prefix."""
  name: str
  family: Family
  defaults: Mapping[str, Any]
  torch_prefix: str = ""


_REGISTRY: dict[str, Entry] = {}


def register(name: str, family: Family, *, torch_prefix: str = "", **defaults: Any) -> None:
  """Registers `name` as `family.model_class(**family.defaults, **defaults)`.

  Args:
    name: the registry name, written out where it is registered (greppable).
    family: the model family.
    torch_prefix: the prefix of every key of the official checkpoint (the v1
      models are saved as the first module of a Sequential: "0.").
    **defaults: the builder arguments that define the named model.
  """
  if name in _REGISTRY:
    raise ValueError(f"model {name!r} is registered twice")
  _REGISTRY[name] = Entry(name, family, {**family.defaults, **defaults}, torch_prefix)


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def entry(name: str) -> Entry:
  """The registry entry of `name`.

  Raises:
    ValueError: for an unknown name; the message lists the valid ones.
  """
  if name not in _REGISTRY:
    raise UserError(f"unknown model {name!r}; valid names: {', '.join(names())}")
  return _REGISTRY[name]


def _options(found: Entry) -> dict[str, inspect.Parameter]:
  """The builder's keyword options (NNX modules hide __init__'s signature)."""
  params = inspect.signature(found.family.model_class.__init__).parameters
  return {k: p for k, p in params.items() if k not in ("self", "rngs")}


def _check_overrides(found: Entry, overrides: Mapping[str, Any]) -> None:
  valid = sorted(_options(found))
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise UserError(f"unknown option(s) {unknown} for model {found.name!r}; "
                     f"valid options: {valid}")


def config_for(name: str, **overrides: Any) -> ModelConfig:
  """The config `create(name, **overrides)` would build, without building it."""
  found = entry(name)
  _check_overrides(found, overrides)
  signature_defaults = {k: p.default for k, p in _options(found).items()
                        if p.default is not inspect.Parameter.empty}
  kwargs = {**signature_defaults, **found.defaults, **overrides}
  return ModelConfig(name, tuple(sorted(kwargs.items())))


def create(name: str, *, rngs: nnx.Rngs, **overrides: Any) -> nnx.Module:
  """Builds the model registered as `name`.

  Args:
    name: a name from `names()`, e.g. "v1_cifar9l_b2".
    rngs: initialisation randomness, e.g. `nnx.Rngs(0)`.
    **overrides: builder arguments that replace the registered ones
      (e.g. `num_classes=100`).

  Raises:
    ValueError: for an unknown name or option; the message lists valid ones.
  """
  config = config_for(name, **overrides)
  model = entry(name).family.model_class(**dict(config.kwargs), rngs=rngs)
  model.config = config
  return model
