"""Input pipeline throughput: images per second per worker.

(a) ImageNet-style training preprocessing (`imagenet_v1`: JPEG decode of
~500×375 images, RandomResizedCrop 224, flip, RandAugment n=2 m=9,
ColorJitter, PCA lighting), (a') the same with its photometric ops (ColorJitter,
PCA lighting) left to the device (`config.photometric_on_device`: the host's
share of the work; `bcos_jax.data.photometric` runs the rest in the train step),
and (b) CIFAR-style (pad-and-crop, flip), on JPEGs the benchmark makes from
scikit-image's sample photographs. Also (c) the v2 `bcos_final` recipe. Each
is timed as the bare transform in one process (= one worker) and through the
grain pipeline (batching included) with 0 and N worker processes. Target for
(a): >= 300 images/s per worker.

    python bench/input_pipeline.py --json bench/results/input_pipeline.json \\
        [--workers 2] [--accelerator_images_per_s 2000]
"""

import io
import json
import math
import pathlib
import platform
import time

import numpy as np
from absl import app, flags
from PIL import Image

from bcos_jax import cli, data

# (row name, recipe, photometric ops on the device, what it is)
RECIPES = (("imagenet_v1", "imagenet_v1", False, "(a) ImageNet v1 train"),
           ("imagenet_v1_device", "imagenet_v1", True, "(a') v1, photometric on device"),
           ("cifar10", "cifar10", False, "(b) CIFAR train"),
           ("bcos_final", "bcos_final", False, "(c) ImageNet v2 train"))
# The rows said against the accelerator's rate: the v1 recipe, whole and split.
_FEEDS = ("imagenet_v1", "imagenet_v1_device")

_JSON = flags.DEFINE_string("json", "bench/results/input_pipeline.json",
                            "The JSON file to write.")
_WORKERS = flags.DEFINE_integer("workers", 2, "worker processes to test")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "per measurement")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size of the grain pipeline.")
_RECIPES = flags.DEFINE_list("recipes", [r[0] for r in RECIPES],
                             "Rows to measure (bench/gpu.sh: the v1 recipe's two).")
_ACCELERATOR_IMAGES_PER_S = flags.DEFINE_float(
    "accelerator_images_per_s", 4434.0, "training throughput to feed (default: B-cos ResNet-50, "
    "bf16, batch 256 on one H100, bench/throughput.py)")


def make_records(kind: str, count: int) -> list[dict]:
  """JPEG records of ~500×375 (ImageNet-like) or 32×32 uint8 arrays (CIFAR-like)."""
  import skimage.data

  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
            skimage.data.rocket()]
  records = []
  for i in range(count):
    photo = Image.fromarray(np.roll(photos[i % len(photos)], 31 * i, axis=1))
    if kind == "cifar10":
      records.append({"image": np.asarray(photo.resize((32, 32))), "label": i % 10})
    else:
      size = (500, 375) if i % 2 else (375, 500)
      buffer = io.BytesIO()
      photo.resize(size).save(buffer, format="JPEG", quality=90)
      records.append({"image": buffer.getvalue(), "label": i % 1000})
  return records


def transform_rate(transform, records, seconds: float) -> float:
  rng = np.random.default_rng(0)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    transform(records[count % len(records)], rng)
    count += 1
  return count / (time.perf_counter() - start)


def pipeline_rate(transform, records, workers: int, batch: int, seconds: float) -> float:
  source = data.Source(records, 1000, "bench", "train")
  iterator = iter(data.train_dataset(source, transform, seed=0, global_batch_size=batch,
                                     worker_count=workers))
  next(iterator)  # start the workers
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += len(next(iterator)["label"])
  elapsed = time.perf_counter() - start
  if hasattr(iterator, "close"):
    iterator.close()
  return count / elapsed


def v1_stage_ms(records, seconds: float) -> dict[str, float]:
  """Host milliseconds per image of each part of the v1 recipe (`imagenet_v1`).

  Each part is the difference between two timed prefixes of the recipe on the same
  draws: decode; the RandomResizedCrop (rendered with no ops); RandAugment's
  geometric ops and cutout; its colour ops (those that would move to the device);
  the flip, ColorJitter and PCA lighting.
  """
  from bcos_jax.data import augment, decode, randaugment_v1

  size = 224  # the recipe's crop
  rng = np.random.default_rng(0)
  draws = []
  for record in records:
    full_size = decode.image_size(record["image"])
    box = augment.random_resized_crop_box(*full_size, rng)
    ops = randaugment_v1.draw_ops(rng, full_size, num_ops=2, magnitude=9)
    draws.append((record["image"], full_size, box, ops, augment.draw_color_jitter(rng),
                  augment.draw_lighting(rng)))
  colour = {op[0] for op in randaugment_v1.V1_OPS} - randaugment_v1.GEOMETRIC - {"cutout"}

  def decoded(draw):
    image, full_size, box, *_ = draw
    return decode.decode_rgb(image, decode.reduction_for_box(box[2:], (size, size)))

  def rendered(draw, keep):
    _, full_size, box, ops, *_ = draw
    kept = tuple(op for op in ops if keep(op.name))
    return randaugment_v1.render_crop(decoded(draw), full_size, kept, box, size)

  def whole(draw):
    *_, jitter, shift = draw
    image = augment.horizontal_flip(rendered(draw, lambda name: True), rng)
    return augment.apply_lighting(augment.apply_color_jitter(image, jitter), shift)

  prefixes = {"decode": decoded,
              "crop": lambda d: rendered(d, lambda name: False),
              "geometric_ops": lambda d: rendered(d, lambda name: name not in colour),
              "colour_ops": lambda d: rendered(d, lambda name: True),
              "flip_jitter_lighting": whole}
  cumulative = {}
  for name, prefix in prefixes.items():
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      prefix(draws[count % len(draws)])
      count += 1
    cumulative[name] = 1e3 * (time.perf_counter() - start) / count
  previous, parts = 0.0, {}
  for name, total in cumulative.items():
    parts[name], previous = total - previous, total
  return {**parts, "total": previous}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workers, seconds, batch = _WORKERS.value, _SECONDS.value, _BATCH.value
  accelerator_images_per_s = _ACCELERATOR_IMAGES_PER_S.value

  unknown = sorted(set(_RECIPES.value) - {r[0] for r in RECIPES})
  if unknown:
    raise app.UsageError(f"--recipes: unknown {', '.join(unknown)}; known: "
                         f"{', '.join(r[0] for r in RECIPES)}")
  rows = []
  for name, recipe, on_device, label in RECIPES:
    if name not in _RECIPES.value:
      continue
    transform, _ = data.train_transforms(recipe, on_device)
    records = make_records(recipe, 64)
    row = {"recipe": name, "what": label,
           "transform_per_worker": transform_rate(transform, records, seconds),
           "pipeline_0_workers": pipeline_rate(transform, records, 0, batch, seconds)}
    total = pipeline_rate(transform, records, workers, batch, seconds)
    row[f"pipeline_{workers}_workers"] = total
    row["pipeline_per_worker"] = total / workers
    rows.append(row)

  print(f"{platform.processor() or platform.machine()}, images/s")
  print(f"{'recipe':<20}{'what':<32}{'1 worker':>10}{'pipe, 0w':>10}"
        f"{f'pipe, {workers}w':>10}{'per w':>8}")
  for r in rows:
    print(f"{r['recipe']:<20}{r['what']:<32}{r['transform_per_worker']:>10.0f}"
          f"{r['pipeline_0_workers']:>10.0f}{r[f'pipeline_{workers}_workers']:>10.0f}"
          f"{r['pipeline_per_worker']:>8.0f}")
  needed = {}
  for row in (r for r in rows if r["recipe"] in _FEEDS):
    per_worker = row["transform_per_worker"]
    needed[row["recipe"]] = math.ceil(accelerator_images_per_s / per_worker)
    delivered = row[f"pipeline_{workers}_workers"]
    print(f"{row['what'][:4]} at {per_worker:.0f} images/s per worker (target 300), "
          f"{needed[row['recipe']]} workers would feed {accelerator_images_per_s:.0f} images/s "
          f"if they scaled linearly; {workers} measured here deliver {delivered:.0f} "
          f"({delivered / accelerator_images_per_s:.0%})")
  stages = {}
  if "imagenet_v1" in _RECIPES.value:
    stages = v1_stage_ms(make_records("imagenet_v1", 64), seconds)
    print("imagenet_v1 host ms per image: " + ", ".join(
        f"{name} {ms:.2f}" for name, ms in stages.items()) +
        f" (RandAugment's colour ops: {stages['colour_ops'] / stages['total']:.0%})")
  result = {"machine": platform.machine(), "rows": rows, "workers_tested": workers,
            "v1_stage_ms": stages,
            "accelerator_images_per_s": accelerator_images_per_s,
            "workers_needed": needed, "target_per_worker": 300}
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
