"""Training, forward and explanation speed of any registered model.

    python bench/throughput.py --model v1_cifar9l_b2 --batch_size 64 --image_size 32 \\
        --steps 10 --json bench/results/throughput_cifar.json

Prints a table and writes JSON with `train_step_ms` (forward, BCE, backward
and Adam update), `forward_ms`, `explain_ms` (medians over --steps after a
warm-up, for the whole batch), `images_per_s` (training) and `peak_bytes`
where the device reports it. `--compute_dtype bfloat16` trains in bfloat16
with float32 parameters (forward and explanation stay float32).
"""

import json
import pathlib

import jax
from absl import app, flags
from flax import nnx
from timing import bcos_jax_functions, median_ms, random_batch

from bcos_jax import cli, models

_MODEL = flags.DEFINE_string("model", None, f"one of {', '.join(models.names())}")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Image height and width.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement (after a warm-up).")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                                   "of the training step (parameters stay float32)")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", None, "the device's peak dense TFLOP/s in --compute_dtype (e.g. 989 for an "
    "H100/H200 in bfloat16, 495 in TF32): adds the train step's MFU (model FLOPs utilisation)")
_JSON = flags.DEFINE_string("json", "bench/results/throughput.json", "The JSON file to write.")


def measure(name: str, batch_size: int, image_size: int, count: int,
            compute_dtype: str = "float32", peak_tflops: float | None = None) -> dict:
  model = models.create(name, rngs=nnx.Rngs(0))
  num_classes = model.config.as_dict().get("num_classes", 1000)
  images, labels = random_batch(batch_size, image_size, num_classes)
  timed = bcos_jax_functions(model, images, labels, compute_dtype)
  result = {"model": name, "batch_size": batch_size, "image_size": image_size, "steps": count,
            "compute_dtype": compute_dtype, "device": jax.devices()[0].device_kind,
            "forward_ms": median_ms(timed["forward"], count),
            "explain_ms": median_ms(timed["explain"], count),
            "train_step_ms": median_ms(timed["train_step"], count)}
  result["images_per_s"] = batch_size / result["train_step_ms"] * 1e3
  result["train_step_flops"] = timed["flops"]("train_step")
  result["mfu"] = (result["train_step_flops"] / (result["train_step_ms"] / 1e3)
                   / (peak_tflops * 1e12) if peak_tflops and result["train_step_flops"] else None)
  stats = jax.devices()[0].memory_stats() or {}
  result["peak_bytes"] = stats.get("peak_bytes_in_use")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  r = measure(_MODEL.value, _BATCH_SIZE.value, _IMAGE_SIZE.value, _STEPS.value,
              _COMPUTE_DTYPE.value, _PEAK_TFLOPS.value)
  print(f"{'model':<18}{'batch':>6}{'size':>6}{'train ms':>10}{'fwd ms':>9}{'explain ms':>12}"
        f"{'img/s':>8}{'GFLOP':>8}{'MFU':>7}  peak bytes")
  print(f"{r['model']:<18}{r['batch_size']:>6}{r['image_size']:>6}{r['train_step_ms']:>10.1f}"
        f"{r['forward_ms']:>9.1f}{r['explain_ms']:>12.1f}{r['images_per_s']:>8.1f}"
        f"{(r['train_step_flops'] or 0) / 1e9:>8.1f}"
        f"{format(r['mfu'], '.1%') if r['mfu'] is not None else '-':>7}  "
        f"{r['peak_bytes']} ({r['device']}, {r['compute_dtype']} training)")
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(r, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  cli.run(main)
