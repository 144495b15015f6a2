"""The device mesh and the shardings of batches and states, shared by training and evaluation.

The mesh has two axes: "data" splits the batch; "fsdp" splits the batch too
and, in addition, every parameter (and its optimiser moments) along one of its
axes, so a model larger than one device's memory can train (fully sharded
data parallel). With fsdp = 1 the state is replicated.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bcos_jax.errors import UserError

BATCH_AXES = ("data", "fsdp")


def make_mesh(num_devices: int | None = None, fsdp: int = 1) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over (the first `num_devices` of) all devices."""
  count = num_devices or jax.device_count()
  if fsdp < 1 or count % fsdp:
    raise UserError(f"fsdp={fsdp} must divide the {count} devices; use one of "
                     f"{[d for d in range(1, count + 1) if count % d == 0]}")
  # Auto axes: the compiler propagates the parameter shardings through the
  # model (FSDP's all-gathers), as with jit's in/out shardings of old.
  return jax.make_mesh((count // fsdp, fsdp), BATCH_AXES, devices=jax.devices()[:count],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def check_batch_divides(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise UserError(
        f"the global batch size {global_batch_size} does not divide over the {devices} "
        f"devices of the mesh: use a multiple of {devices} (e.g. "
        f"{(global_batch_size // devices + 1) * devices}), or fewer devices")


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_rows(mesh: jax.sharding.Mesh, global_batch_size: int) -> np.ndarray:
  """The rows of each global batch that this process's devices hold, ascending.

  The process feeds exactly these rows (`shard_batch`), and reads only them from the
  data (`bcos_jax.data.train_dataset(rows=...)`), so the global batch is the same on
  any number of processes.
  """
  indices = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  rows = np.concatenate([np.arange(global_batch_size)[index] for index in indices.values()])
  return np.unique(rows)


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's part of the global batch -> global arrays split over all devices."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _leaf_sharding(leaf, mesh: jax.sharding.Mesh) -> NamedSharding:
  """FSDP rule: shard the largest axis that the fsdp size divides; else replicate."""
  size = mesh.shape["fsdp"]
  shape = getattr(leaf, "shape", ())
  if size > 1:
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
      if shape[axis] % size == 0:
        spec = [None] * len(shape)
        spec[axis] = "fsdp"
        return NamedSharding(mesh, P(*spec))
  return NamedSharding(mesh, P())


def state_sharding(state, mesh: jax.sharding.Mesh):
  """The sharding of every leaf of a state pytree (replicated unless fsdp > 1)."""
  return jax.tree.map(lambda leaf: _leaf_sharding(leaf, mesh), state)


def place_state(state, mesh: jax.sharding.Mesh):
  return jax.device_put(state, state_sharding(state, mesh))


def abstract_state(state, mesh: jax.sharding.Mesh):
  """`jax.ShapeDtypeStruct`s of a (possibly abstract) state, each with its sharding.

  What a checkpoint restores into (each device reads only its shards) and what a
  jitted creation lays out (`out_shardings`).
  """
  return jax.tree.map(lambda leaf, leaf_sharding: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=leaf_sharding), state, state_sharding(state, mesh))


def gathered(tree, mesh: jax.sharding.Mesh):
  """`tree` replicated on every device (a jitted reshard; every process must call it),
  so that each process can read it whole with `jax.device_get`."""
  return jax.jit(lambda x: x, out_shardings=replicated(mesh))(tree)
