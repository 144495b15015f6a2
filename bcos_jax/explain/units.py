"""The records of a data source that excite an intermediate unit most, and their explanations.

A unit is a channel of a submodule's output, summed over its positions (as
`explain_unit` with position None defines it). `top_activating` scans every
record once, in batches split over the devices, keeps the k highest
activations and explains the unit on those k images: W_{1→l}(x) shows what
in each image the unit responds to (the paper's Fig. 1 for hidden units).
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bcos_jax import data, models, sharding
from bcos_jax.errors import UserError
from bcos_jax.explain import explanation, probe


@dataclasses.dataclass(frozen=True)
class TopActivating:
  """The k records with the highest activations of one unit, highest first.

  Attributes:
    layer: the unit's submodule, a dotted path.
    channel: its output channel.
    indices: (k,) the records' indices in the source (ties: the lower index first).
    activations: (k,) the unit's activations on them.
    images: uint8 (k, H, W, 3) the records after the transform.
    x6: (k, H, W, 6) the images as the model's input.
    explanation: `explain_unit` of the unit on them (its logits are the activations).
  """
  layer: str
  channel: int
  indices: np.ndarray
  activations: np.ndarray
  images: np.ndarray
  x6: jax.Array
  explanation: explanation.Explanation


def _activation_step(graphdef: nnx.GraphDef, state: nnx.State, path: tuple[str | int, ...],
                     channel: int, mesh: jax.sharding.Mesh) -> Callable:
  """A jitted (state, uint8 images split over the mesh) -> (N,) activations, replicated."""

  def step(state: nnx.State, images: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    tap = probe.attach(model, path)
    model(models.input_transform(model)(images))  # the forward of explanation mode, too
    return explanation.unit_activation(probe.single(tap, path), path, channel, None)

  return jax.jit(step, in_shardings=(sharding.state_sharding(state, mesh),
                                     sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def _scan(step: Callable, state: nnx.State, batches, mesh: jax.sharding.Mesh) -> np.ndarray:
  """(len(source),) the unit's activation on every record, in record order.

  One float per record stays on the host (5 MB for ImageNet's training set),
  so the top k are chosen at the end, exactly and with ties by index.
  """
  outputs = [(step(state, sharding.shard_batch({"image": batch["image"]}, mesh)["image"]),
              batch["mask"]) for batch in batches]
  outputs = jax.device_get(outputs)
  # eval_dataset (one process) gives the records in order and pads the last batch.
  keep = np.concatenate([mask for _, mask in outputs])
  return np.concatenate([activations for activations, _ in outputs])[keep]


def _check_k(k: int, count: int) -> None:
  if not 1 <= k <= count:
    raise UserError(f"k={k} top-activating images were asked of a source of {count} records: "
                    f"use 1..{count}")


def top_activating(model: nnx.Module, source: Sequence, transform: Callable[[dict], dict],
                   layer: str | Sequence[str | int], channel: int, k: int, *,
                   batch_size: int = 64, mesh: jax.sharding.Mesh | None = None,
                   worker_count: int = 0) -> TopActivating:
  """Scans every record of `source` for the k highest activations of a unit (one process).

  Args:
    model: a B-cos model.
    source: a random-access source of records (`bcos_jax.data.Source`).
    transform: record -> {"image": uint8 (H, W, 3), "label"}, e.g. a recipe's
      evaluation transform (`bcos_jax.data.get_recipe(name).eval`).
    layer: the unit's submodule, a path from `module_paths(model)`.
    channel: the unit's output channel.
    k: how many records to keep, 1..len(source).
    batch_size: records per step, split over the mesh's devices (a multiple of their number).
    mesh: the device mesh (default: all devices).
    worker_count: grain processes that read and transform records (0: this one).

  Returns:
    A `TopActivating`, highest activation first.

  Raises:
    UserError: for a model that is not a B-cos network, a layer that is not
      a submodule (the valid ones are listed), a channel out of range, k
      outside 1..len(source), or a batch size the devices do not divide.
  """
  path = probe.parse_path(layer)
  probe.check_path(model, path)
  _check_k(k, len(source))
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_divides(batch_size, mesh)
  explanation.check_explainable(
      model, models.input_transform(model)(transform(source[0])["image"][None]))
  graphdef, state = nnx.split(models.eval_mode(model))
  state = sharding.place_state(state, mesh)
  step = _activation_step(graphdef, state, path, int(channel), mesh)
  batches = data.eval_dataset(source, transform, global_batch_size=batch_size,
                              worker_count=worker_count)
  activations = _scan(step, state, batches, mesh)
  indices = np.argsort(-activations, kind="stable")[:k]
  images = np.stack([transform(source[int(i)])["image"] for i in indices])
  x6 = models.input_transform(model)(jnp.asarray(images))
  unit = explanation.explain_unit(model, x6, path, channel)
  return TopActivating(".".join(map(str, path)), int(channel), indices, activations[indices],
                       images, x6, unit)
