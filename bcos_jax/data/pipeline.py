"""grain pipelines: sharded, shuffled, augmented training batches and padded evaluation.

Images leave the pipeline as uint8 and are converted to float and encoded
the way the model wants them on the device (`bcos_jax.models.input_transform`):
a quarter of the bytes to move, and no float work on the host.
"""

import functools
import math
from collections.abc import Callable, Sequence

import cv2
import grain
import numpy as np
from absl import flags

from bcos_jax.errors import UserError


def batch_rows(global_batch_size: int, rows: Sequence[int] | None) -> np.ndarray:
  """The rows of every global batch this process reads (all of them by default), checked.

  `rows` comes from the mesh (`bcos_jax.sharding.process_rows`): the rows of the global
  batch that this process's devices hold, in order.
  """
  if rows is None:
    return np.arange(global_batch_size)
  rows = np.asarray(rows, dtype=np.int64)
  if rows.size == 0 or rows.min() < 0 or rows.max() >= global_batch_size:
    raise UserError(f"rows {rows.tolist()} are not rows of a global batch of "
                    f"{global_batch_size}")
  return rows


def _row_record(position: int, *, records: grain.MapDataset, rows: np.ndarray,
                global_batch_size: int):
  """Record `position` of this process: its row of the global batch it belongs to."""
  batch, row = divmod(position, len(rows))
  return records[batch * global_batch_size + int(rows[row])]


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
                  seed: int, global_batch_size: int, rows: Sequence[int] | None = None,
                  start_step: int = 0, worker_count: int = 0, worker_buffer_size: int = 2,
                  batch_transform: Callable[[dict, np.random.Generator], dict] | None = None,
                  num_epochs: int | None = None) -> grain.IterDataset:
  """Endless (or `num_epochs`) training batches: this process's rows of each global batch.

  The global order does not depend on how many processes or devices read it:
  each epoch is one permutation of the whole source, global batch k is records
  k·B .. k·B + B - 1 of it, and each record gets its own generator from grain,
  derived from the seed and its global position (so also the same for any
  number of workers). A process reads only its `rows` of each global batch
  (random access makes skipping the others free), so a run gives the same
  batches on one host or on many, and can resume on another topology.

  Args:
    source: a random-access source of records.
    transform: the recipe's training transform.
    seed: the data seed.
    global_batch_size: B, summed over processes.
    rows: the rows of each global batch this process reads
      (`bcos_jax.sharding.process_rows`); None: all (one process).
    start_step: the first global batch (a resumed run's step): the data position
      is the step, so a checkpoint needs no iterator state.
    worker_count: prefetching processes (0: in this process).
    worker_buffer_size: batches each worker keeps ready.
    batch_transform: e.g. mixup/cutmix, `(batch, rng) -> batch`; its generator is
      global batch k's, the same in every process.
    num_epochs: None repeats forever.

  Returns:
    A grain IterDataset of {"image": uint8 (b, H, W, 3), "label": int32 (b,)}, b = len(rows).
  """
  rows = batch_rows(global_batch_size, rows)
  if len(source) < global_batch_size:
    raise UserError(f"the training split has {len(source)} records, fewer than the batch of "
                    f"{global_batch_size}: lower the batch size")
  records = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
  records = records.random_map(transform)
  num_batches = len(records) // global_batch_size
  dataset = grain.MapDataset.range(num_batches * len(rows)).map(functools.partial(
      _row_record, records=records, rows=rows, global_batch_size=global_batch_size))
  dataset = dataset.batch(len(rows), drop_remainder=True, batch_fn=_stack)
  if batch_transform is not None:
    # Seeded by the global batch's index, so every process draws the same mixing.
    dataset = dataset.seed(seed).random_map(batch_transform)
  return _prefetch(dataset[start_step:], worker_count, worker_buffer_size)


def num_eval_batches(num_records: int, global_batch_size: int) -> int:
  """Global batches that hold every record once (the last one padded)."""
  return math.ceil(num_records / global_batch_size)


def eval_dataset(source, transform: Callable[[dict], dict], *, global_batch_size: int,
                 rows: Sequence[int] | None = None, worker_count: int = 0,
                 worker_buffer_size: int = 2) -> grain.IterDataset:
  """Every record exactly once over all processes, in record order, padded, with a mask.

  Global batch k holds records k·B .. k·B + B - 1; a process reads its `rows` of
  each. The last global batch is padded with copies of record 0 marked
  `mask = False`, so metrics that weight by the mask count each record once,
  and every process runs the same number of steps.

  Returns:
    A grain IterDataset of {"image", "label", "mask": bool (b,)}, b = len(rows).
  """
  rows = batch_rows(global_batch_size, rows)
  num_records = len(source)
  length = num_eval_batches(num_records, global_batch_size) * len(rows)
  dataset = grain.MapDataset.range(length).map(
      functools.partial(_eval_record, source=source, transform=transform, rows=rows,
                        global_batch_size=global_batch_size, num_records=num_records))
  dataset = dataset.batch(len(rows), drop_remainder=True, batch_fn=_stack)
  return _prefetch(dataset, worker_count, worker_buffer_size)


def _eval_record(position: int, *, source, transform, rows: np.ndarray,
                 global_batch_size: int, num_records: int) -> dict:
  batch, row = divmod(position, len(rows))
  index = batch * global_batch_size + int(rows[row])
  real = index < num_records
  record = transform(source[index if real else 0])
  return {**record, "mask": np.bool_(real)}
