"""Models by name: `create(name, rngs=..., **overrides)` and `names()`.

A registry entry is a model class and the keyword arguments that define the
named model, constants included (layer scales, logit temperature and bias).
`create` records the final arguments in `model.config`, so a model (and a
checkpoint that stores the config) always says exactly what it is.
"""

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The registry name and the builder arguments of a model (hashable)."""
  name: str
  kwargs: tuple[tuple[str, Any], ...]

  def as_dict(self) -> dict[str, Any]:
    return {"name": self.name, **dict(self.kwargs)}


@dataclasses.dataclass(frozen=True)
class _Entry:
  model_class: Callable[..., nnx.Module]
  defaults: Mapping[str, Any]


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, model_class: Callable[..., nnx.Module], **defaults: Any) -> None:
  """Registers `name` as `model_class(**defaults)`."""
  if name in _REGISTRY:
    raise ValueError(f"model {name!r} is registered twice")
  _REGISTRY[name] = _Entry(model_class, dict(defaults))


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def _check_name(name: str) -> _Entry:
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}")
  return _REGISTRY[name]


def _options(entry: _Entry) -> dict[str, inspect.Parameter]:
  """The builder's keyword options (NNX modules hide __init__'s signature)."""
  params = inspect.signature(entry.model_class.__init__).parameters
  return {k: p for k, p in params.items() if k not in ("self", "rngs")}


def _check_overrides(name: str, entry: _Entry, overrides: Mapping[str, Any]) -> None:
  valid = sorted(_options(entry))
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {valid}")


def config_for(name: str, **overrides: Any) -> ModelConfig:
  """The config `create(name, **overrides)` would build, without building it."""
  entry = _check_name(name)
  _check_overrides(name, entry, overrides)
  signature_defaults = {k: p.default for k, p in _options(entry).items()
                        if p.default is not inspect.Parameter.empty}
  kwargs = {**signature_defaults, **entry.defaults, **overrides}
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
  model = _REGISTRY[name].model_class(**dict(config.kwargs), rngs=rngs)
  model.config = config
  return model
