"""Time per image of every attribution method, for any registered models.

    python bench/explainers.py --models v1_cifar9l_b2:32,resnet18:224 --images 4 \\
        --json bench/results/explainers.json

Each method explains the top class of --images random images (one batch,
after a warm-up call that compiles it); the table gives milliseconds per
image, the median over --repeats calls. LIME runs quickshift on the host
image by image, so it is timed over fewer samples with --lime_samples and
scaled to the paper's 500.
"""

import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from bcos_jax import cli, models
from bcos_jax.evaluate import attribution

_MODELS = flags.DEFINE_list("models", ["v1_cifar9l_b2:32", "resnet18:224"],
                            "comma-separated NAME:IMAGE_SIZE")
_METHODS = flags.DEFINE_list("methods", list(attribution.METHODS),
                             "Attribution methods to time (comma-separated).")
_IMAGES = flags.DEFINE_integer("images", 4, "Random images in the batch.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per method (after a warm-up).")
_LIME_SAMPLES = flags.DEFINE_integer("lime_samples", 100, "LIME samples timed (scaled to 500).")
_JSON = flags.DEFINE_string("json", "bench/results/explainers.json", "The JSON file to write.")


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
  x6 = models.input_transform(model)(images.astype(jnp.uint8))
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(f"{'model':<16}{'size':>6}  {'method':<22}{'ms / image':>12}")
  rows = []
  for entry in _MODELS.value:
    name, _, size = entry.partition(":")
    rows += measure(name, int(size or 224), _IMAGES.value, _REPEATS.value, _LIME_SAMPLES.value,
                    _METHODS.value)
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"rows": rows}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
