"""Time per image of every attribution method, for any registered models.

    python bench/explainers.py --models v1_cifar9l_b2:32,resnet18:224 --images 4 \\
        --json bench/results/explainers.json

Each method explains the top class of --images random images (one batch,
after a warm-up call that compiles it); the table gives milliseconds per
image, the median over --repeats calls. LIME runs quickshift on the host
image by image, so it is timed over fewer samples with --lime-samples and
scaled to the paper's 500.
"""

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax import models
from bcos_jax.data import to_model_input
from bcos_jax.evaluate import attribution


def _median_s(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(name: str, image_size: int, count: int, repeats: int, lime_samples: int,
            methods: list[str]) -> list[dict]:
  model = models.create(name, rngs=nnx.Rngs(0))
  images = jax.random.randint(jax.random.key(0), (count, image_size, image_size, 3), 0, 256)
  x6 = to_model_input(images.astype(jnp.uint8))
  targets = jnp.argmax(model(x6), axis=-1)
  rows = []
  for method_name in methods:
    method = attribution.get_method(method_name)
    options, scale = {}, 1.0
    if method_name == "lime":
      options = dict(samples=lime_samples, batch_size=min(lime_samples, 50))
      scale = 500 / lime_samples
    seconds = _median_s(lambda m=method, o=options: m(model, x6, targets, **o), repeats) * scale
    rows.append({"model": name, "image_size": image_size, "method": method_name,
                 "images": count, "ms_per_image": seconds / count * 1e3,
                 "device": jax.devices()[0].device_kind})
    print(f"{name:<16}{image_size:>6}  {method_name:<22}{rows[-1]['ms_per_image']:>12.1f}",
          flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="v1_cifar9l_b2:32,resnet18:224",
                      help="comma-separated NAME:IMAGE_SIZE")
  parser.add_argument("--methods", default=",".join(attribution.METHODS))
  parser.add_argument("--images", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--lime-samples", type=int, default=100)
  parser.add_argument("--json", type=pathlib.Path,
                      default=pathlib.Path("bench/results/explainers.json"))
  args = parser.parse_args()
  print(f"{'model':<16}{'size':>6}  {'method':<22}{'ms / image':>12}")
  rows = []
  for entry in args.models.split(","):
    name, _, size = entry.partition(":")
    rows += measure(name, int(size or 224), args.images, args.repeats, args.lime_samples,
                    args.methods.split(","))
  args.json.parent.mkdir(parents=True, exist_ok=True)
  args.json.write_text(json.dumps({"rows": rows}, indent=2))
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
