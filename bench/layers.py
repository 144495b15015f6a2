"""Speed of BcosConv against a plain convolution, and of explain against a forward pass.

Prints a table and writes JSON. Targets (issue #2): a B-cos convolution costs
at most 1.3x a plain `nnx.Conv` with the same number of linear units
(out x max_out), forward and forward+backward; `explain` at most 3x a
forward pass of the same model and batch.

    python bench/layers.py --json bench/results/layers.json [--quick]
"""

import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from bcos_jax import cli, explain, models, nn

_JSON = flags.DEFINE_string("json", "bench/results/layers.json", "The JSON file to write.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
_QUICK = flags.DEFINE_bool("quick", False, "one small shape, 2 steps (smoke test)")

# (name, batch, spatial size, in channels, out channels, kernel size)
LAYER_SHAPES = [
    ("cifar_32x32_64", 64, 32, 64, 64, 3),
    ("cifar_16x16_128", 64, 16, 128, 128, 3),
    ("imagenet_56x56_64", 16, 56, 64, 64, 3),
    ("imagenet_14x14_256", 16, 14, 256, 256, 3),
]


def _paired_median_ms(calls, steps: int) -> list[float]:
  """Median time of each (fn, args) in `calls`, run in alternation.

  Alternating the candidates step by step spreads the machine's drift (other
  processes, clock changes) evenly over them, so their ratio is fair.
  """
  for fn, args in calls:
    jax.block_until_ready(fn(*args))  # compile and warm up
  times = [[] for _ in calls]
  for _ in range(steps):
    for (fn, args), bucket in zip(calls, times, strict=True):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      bucket.append((time.perf_counter() - start) * 1e3)
  return [statistics.median(t) for t in times]


def _forward_and_backward(module):
  """Jitted forward, and forward+backward (gradients for parameters and input)."""
  graphdef, params = nnx.split(module)

  @jax.jit
  def forward(params, x):
    return nnx.merge(graphdef, params)(x)

  @jax.jit
  def forward_backward(params, x):
    return jax.grad(lambda p, z: jnp.sum(forward(p, z) ** 2), argnums=(0, 1))(params, x)

  return params, forward, forward_backward


def bench_layers(steps: int, shapes) -> list[dict]:
  rows = []
  for name, batch, size, c_in, c_out, k in shapes:
    x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))
    for units in (1, 2):
      bcos = nn.BcosConv(c_in, c_out, k, padding=k // 2, b=2.0, max_out=units, rngs=nnx.Rngs(0))
      plain = nnx.Conv(c_in, c_out * units, (k, k), padding=k // 2, use_bias=False,
                       rngs=nnx.Rngs(0))
      row = {"layer": name, "max_out": units}
      bcos_params, bcos_fwd, bcos_fwd_bwd = _forward_and_backward(bcos)
      plain_params, plain_fwd, plain_fwd_bwd = _forward_and_backward(plain)
      row["bcos_forward_ms"], row["plain_forward_ms"] = _paired_median_ms(
          [(bcos_fwd, (bcos_params, x)), (plain_fwd, (plain_params, x))], steps)
      row["bcos_fwd_bwd_ms"], row["plain_fwd_bwd_ms"] = _paired_median_ms(
          [(bcos_fwd_bwd, (bcos_params, x)), (plain_fwd_bwd, (plain_params, x))], steps)
      row["forward_ratio"] = row["bcos_forward_ms"] / row["plain_forward_ms"]
      row["fwd_bwd_ratio"] = row["bcos_fwd_bwd_ms"] / row["plain_fwd_bwd_ms"]
      rows.append(row)
  return rows


def bench_explain(steps: int, batch: int) -> dict:
  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0))
  x6 = nn.add_inverse(jax.random.uniform(jax.random.key(0), (batch, 32, 32, 3)))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  explain_fn = jax.jit(lambda s, x: explain.explain(nnx.merge(graphdef, s), x))
  forward_ms, explain_ms = _paired_median_ms(
      [(forward, (state, x6)), (explain_fn, (state, x6))], steps)
  row = {"model": "v1_cifar9l_b2", "batch": batch, "forward_ms": forward_ms,
         "explain_ms": explain_ms}
  row["ratio"] = row["explain_ms"] / row["forward_ms"]
  return row


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  steps = 2 if _QUICK.value else _STEPS.value
  shapes = [("smoke_8x8_8", 2, 8, 8, 8, 3)] if _QUICK.value else LAYER_SHAPES

  layer_rows = bench_layers(steps, shapes)
  explain_row = bench_explain(steps, batch=4 if _QUICK.value else 64)

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"jax {jax.__version__}, median of {steps} steps")
  header = (f"{'layer':<20}{'max_out':>8}{'bcos fwd':>10}{'conv fwd':>10}{'ratio':>7}"
            f"{'bcos f+b':>10}{'conv f+b':>10}{'ratio':>7}")
  print(header)
  for r in layer_rows:
    print(f"{r['layer']:<20}{r['max_out']:>8}{r['bcos_forward_ms']:>10.2f}"
          f"{r['plain_forward_ms']:>10.2f}{r['forward_ratio']:>7.2f}{r['bcos_fwd_bwd_ms']:>10.2f}"
          f"{r['plain_fwd_bwd_ms']:>10.2f}{r['fwd_bwd_ratio']:>7.2f}")
  print(f"explain {explain_row['model']} batch {explain_row['batch']}: "
        f"forward {explain_row['forward_ms']:.2f} ms, explain {explain_row['explain_ms']:.2f} ms, "
        f"ratio {explain_row['ratio']:.2f} (target <= 3)")

  result = {"device": jax.devices()[0].device_kind, "device_count": jax.device_count(),
            "jax": jax.__version__, "machine": platform.machine(), "steps": steps,
            "layers": layer_rows, "explain": explain_row,
            "targets": {"layer_ratio_max": 1.3, "explain_ratio_max": 3.0}}
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
