"""grain pipelines: sharded, shuffled, augmented training batches and padded evaluation.

Images leave the pipeline as uint8 and are converted to float and encoded
the way the model wants them on the device (`bcos_jax.models.input_transform`):
a quarter of the bytes to move, and no float work on the host.
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import cv2
import grain
import jax
import numpy as np
from absl import flags

from bcos_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ProcessShard:
  """Which part of the data this process reads (multi-host): index of count."""
  index: int = 0
  count: int = 1

  @classmethod
  def from_jax(cls) -> "ProcessShard":
    return cls(jax.process_index(), jax.process_count())


def per_process_batch_size(global_batch_size: int, shard: ProcessShard) -> int:
  """The global batch split over processes.

  Raises:
    ValueError: when it does not divide, saying what to change.
  """
  if global_batch_size % shard.count:
    raise UserError(f"the global batch size {global_batch_size} does not divide over "
                     f"{shard.count} processes: use a multiple of {shard.count}")
  return global_batch_size // shard.count


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Runs in each grain worker process: one OpenCV thread per worker, since the
  workers are the parallelism (set here, not at import, so importing changes nothing)."""
  del worker_index, worker_count
  cv2.setNumThreads(1)


def _prefetch(dataset: grain.MapDataset, worker_count: int,
              buffer_size: int) -> grain.IterDataset:
  iter_dataset = dataset.to_iter_dataset()
  if worker_count > 0:
    # grain's workers read absl flags; in a program that does not parse them
    # (a script, a notebook) they would fail, so take the defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=buffer_size),
        worker_init_fn=_init_worker)
  return iter_dataset


def _stack(records: list[dict]) -> dict[str, np.ndarray]:
  batch = {key: np.stack([r[key] for r in records]) for key in records[0]}
  batch["label"] = batch["label"].astype(np.int32)
  return batch


def train_dataset(source, transform: Callable[[dict, np.random.Generator], dict], *,
                  seed: int, global_batch_size: int, shard: ProcessShard | None = None,
                  worker_count: int = 0, worker_buffer_size: int = 2,
                  batch_transform: Callable[[dict, np.random.Generator], dict] | None = None,
                  num_epochs: int | None = None) -> grain.IterDataset:
  """Endless (or `num_epochs`) training batches for this process.

  Each process reads every `shard.count`-th record; each epoch is a new
  permutation; each record gets its own generator from grain, derived from
  the seed and its position, so the batches are the same for any number of
  workers. Iterate with `iter(...)`; the iterator's `get_state()` /
  `set_state()` save and restore the position.

  Args:
    source: a random-access source of records.
    transform: the recipe's training transform.
    seed: the data seed.
    global_batch_size: summed over processes.
    shard: this process's part (default: the only process).
    worker_count: prefetching processes (0: in this process).
    worker_buffer_size: batches each worker keeps ready.
    batch_transform: e.g. mixup/cutmix, `(batch, rng) -> batch`.
    num_epochs: None repeats forever.

  Returns:
    A grain IterDataset of {"image": uint8 (B, H, W, 3), "label": int32 (B,)}.
  """
  shard = shard or ProcessShard()
  batch_size = per_process_batch_size(global_batch_size, shard)
  records = grain.MapDataset.source(source)[shard.index::shard.count]
  if len(records) < batch_size:
    raise UserError(f"this process has {len(records)} records, fewer than its batch of "
                     f"{batch_size}: lower the batch size")
  dataset = records.seed(seed).shuffle().repeat(num_epochs).random_map(transform)
  dataset = dataset.batch(batch_size, drop_remainder=True, batch_fn=_stack)
  if batch_transform is not None:
    dataset = dataset.random_map(batch_transform)
  return _prefetch(dataset, worker_count, worker_buffer_size)


def num_eval_batches(num_records: int, global_batch_size: int, shard: ProcessShard) -> int:
  """Batches per process so that every process runs the same number of steps."""
  batch_size = per_process_batch_size(global_batch_size, shard)
  return math.ceil(math.ceil(num_records / shard.count) / batch_size)


def eval_dataset(source, transform: Callable[[dict], dict], *, global_batch_size: int,
                 shard: ProcessShard | None = None, worker_count: int = 0,
                 worker_buffer_size: int = 2) -> grain.IterDataset:
  """Every record exactly once over all processes, in padded batches with a mask.

  Process p gets records p, p + count, ...; the last batches are padded with
  copies of a record marked `mask = False`, so metrics that weight by the
  mask count each record once.

  Returns:
    A grain IterDataset of {"image", "label", "mask": bool (B,)}.
  """
  shard = shard or ProcessShard()
  batch_size = per_process_batch_size(global_batch_size, shard)
  num_records = len(source)
  length = num_eval_batches(num_records, global_batch_size, shard) * batch_size
  dataset = grain.MapDataset.range(length).map(
      functools.partial(_eval_record, source=source, transform=transform, shard=shard,
                        num_records=num_records))
  dataset = dataset.batch(batch_size, drop_remainder=True, batch_fn=_stack)
  return _prefetch(dataset, worker_count, worker_buffer_size)


def _eval_record(position: int, *, source, transform, shard: ProcessShard,
                 num_records: int) -> dict:
  index = position * shard.count + shard.index
  real = index < num_records
  record = transform(source[index if real else 0])
  return {**record, "mask": np.bool_(real)}
