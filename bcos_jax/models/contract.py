"""What every tool asks of a model: its family's metadata, its input, its evaluation view.

The train step, evaluation, explanations, attribution methods and the
localisation command all go through these functions, so none of them
switches on a class name or assumes a 6-channel input.
"""

import dataclasses
from collections.abc import Callable

import jax
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.nn.encoding import InputEncoding, get_encoding


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """A model's registry entry as tools read it.

  Attributes:
    name: the registry name.
    family: the `registry.Family` (key map, Grad-CAM layer, auxiliary head).
    encoding: how the model wants its input.
    torch_prefix: the key prefix of its official checkpoint.
  """
  name: str
  family: registry.Family
  encoding: InputEncoding
  torch_prefix: str

  @property
  def bcos(self) -> bool:
    return self.family.bcos


def info(model_or_name: nnx.Module | str) -> ModelInfo:
  """The metadata of a model built by `create` (or of a registered name).

  Raises:
    ValueError: for a module not built by `bcos_jax.models.create` (it carries
      no config), or an unknown name.
  """
  if isinstance(model_or_name, str):
    name = model_or_name
  else:
    config = getattr(model_or_name, "config", None)
    if not isinstance(config, registry.ModelConfig):
      raise UserError(f"{type(model_or_name).__name__} was not built by "
                       "bcos_jax.models.create, so it declares no input encoding or "
                       "metadata; build it with models.create(name, ...)")
    name = config.name
  found = registry.entry(name)
  return ModelInfo(name, found.family, get_encoding(found.family.input_encoding),
                   found.torch_prefix)


def input_transform(model: nnx.Module) -> Callable[[jax.Array], jax.Array]:
  """uint8 RGB images (N, H, W, 3), as the data pipelines deliver them -> the model's input.

  B-cos models get [r, g, b, 1-r, 1-g, 1-b] in [0, 1]; the conventional
  baselines RGB normalised with the ImageNet statistics. Jittable.
  """
  return info(model).encoding.from_uint8


def check_input(model: nnx.Module, x: jax.Array) -> None:
  """Raises a clear error unless `x` is what `model` takes (e.g. 6 channels for B-cos)."""
  found = info(model)
  found.encoding.check(x, found.name)


def eval_mode(model: nnx.Module) -> nnx.Module:
  """The model as evaluation, explanations and attribution methods see it.

  Results must not depend on the batch or on chance: norm layers use their
  running statistics and stochastic depth keeps every branch. A view: the
  variables are shared with `model`.
  """
  return nnx.view(model, use_running_average=True, deterministic=True,
                  raise_if_not_found=False)


def has_aux_head(model: nnx.Module) -> bool:
  """Whether the model was built with its auxiliary classifier (for an auxiliary loss)."""
  attribute = info(model).family.aux_head
  return attribute is not None and getattr(model, attribute, None) is not None
