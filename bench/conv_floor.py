"""The floor under the CPU ratios: a model's convolutions and matrix products alone,
XLA:CPU against PyTorch (oneDNN, MKL), on the same shapes.

`bench/vs_official.py` times whole steps. This script takes every linear op of a
model's forward pass (the `conv_general_dilated` and `dot_general` equations of
its jaxpr, with their shapes, strides, padding and groups), and times each op's
forward, its input gradient ("dgrad": what an explanation back-propagates) and
its weight gradient ("wgrad": what training adds), once per distinct shape,
weighted by how often the model uses it. Where torch is installed the same ops
run in torch (NCHW, as the official models run; 2 threads by default) on the
same shapes. The sums bound what any code on each side can reach:

  batched explanation >= forward + dgrad
  train step          >= forward + dgrad + wgrad (before norms, activations, Adam)

so the XLA/torch ratio of those sums is the ratio a whole step cannot beat
without faster kernels.

    pip install torch   # the PyTorch side only: not a dependency
    python bench/conv_floor.py --models resnet50:224:8,densenet121:224:8,v1_cifar9l_b2:32:64 \\
        --json bench/results/conv_floor.json
"""

import collections
import dataclasses
import json
import math
import pathlib
import platform
import string

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import timing  # bench/timing.py
from absl import app, flags
from flax import nnx

from bcos_jax import cli, models
from bcos_jax.errors import UserError

_MODELS = flags.DEFINE_list("models", ["resnet50:224:8", "densenet121:224:8"],
                            "NAME:IMAGE_SIZE:BATCH entries.")
_COUNT = flags.DEFINE_integer("count", 5, "Timed calls per op (median).")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU threads of PyTorch.")
_OURS_ONLY = flags.DEFINE_bool("ours_only", False, "XLA's side only (no torch needed).")
_JSON = flags.DEFINE_string("json", "bench/results/conv_floor.json", "The JSON file to write.")

PARTS = ("forward", "dgrad", "wgrad")


@dataclasses.dataclass(frozen=True)
class LinearOp:
  """One linear equation of a forward pass.

  Attributes:
    primitive: "conv_general_dilated" or "dot_general".
    shapes: the two operands' shapes.
    params: the equation's parameters, hashable (strides, padding, dimension numbers...).
    sources: each operand's `Source`: its gradient is "dgrad" for an activation,
      "wgrad" for a parameter, none for a constant.
  """
  primitive: str
  shapes: tuple[tuple[int, ...], tuple[int, ...]]
  params: tuple
  sources: tuple[int, int]

  @property
  def label(self) -> str:
    lhs, rhs = self.shapes
    if self.primitive == "conv_general_dilated":
      strides = dict(self.params)["window_strides"]
      return f"conv {lhs}*{rhs[:2]} {rhs[2]}->{rhs[3]} s{strides[0]}"
    return f"dot {lhs}x{rhs}"


class Source:
  """What a value of the forward pass is computed from; a combination is its largest."""
  CONSTANT, PARAMETER, ACTIVATION = 0, 1, 2


def _hashable(value):
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  return value


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    if isinstance(value, jax.extend.core.ClosedJaxpr):
      yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
      yield value


def _walk(jaxpr, sources: list[int], found: collections.Counter) -> None:
  """Collects the linear ops of `jaxpr`, whose invars have `sources`, into `found`."""
  known = dict(zip(jaxpr.invars, sources, strict=True))

  def source(atom) -> int:  # literals and closed-over constants: CONSTANT
    return known.get(atom, Source.CONSTANT) if isinstance(atom, jax.extend.core.Var) else (
        Source.CONSTANT)

  for eqn in jaxpr.eqns:
    inputs = [source(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in ("conv_general_dilated", "dot_general") and Source.ACTIVATION in inputs:
      params = tuple(sorted((k, _hashable(v)) for k, v in eqn.params.items()))
      shapes = tuple(tuple(v.aval.shape) for v in eqn.invars)
      found[LinearOp(name, shapes, params, tuple(inputs))] += 1
    for sub in _sub_jaxprs(eqn):
      mapped = inputs if len(sub.invars) == len(eqn.invars) else (
          [Source.ACTIVATION] * len(sub.invars))  # not a 1:1 call: assume the worst
      _walk(sub, mapped, found)
    for var in eqn.outvars:
      known[var] = max(inputs, default=Source.CONSTANT)


def linear_ops(model: nnx.Module, x6: jax.Array) -> collections.Counter:
  """The model's linear ops (evaluation mode) and how often each occurs."""
  graphdef, state = nnx.split(models.eval_mode(model))
  closed = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x6)
  leaves = len(jax.tree.leaves(state))
  found = collections.Counter()
  _walk(closed.jaxpr, [Source.PARAMETER] * leaves
        + [Source.ACTIVATION] * (len(closed.jaxpr.invars) - leaves), found)
  return found


def _operands(op: LinearOp, seed: int = 0):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(shape).astype(np.float32) for shape in op.shapes]


def _jax_apply(op: LinearOp):
  """The equation itself, as it was traced."""
  primitive = {"conv_general_dilated": jax.lax.conv_general_dilated_p,
               "dot_general": jax.lax.dot_general_p}[op.primitive]
  params = dict(op.params)
  return lambda a, b: primitive.bind(a, b, **params)


def xla_ms(op: LinearOp, count: int) -> dict[str, float]:
  """XLA:CPU's forward, dgrad and wgrad of `op` (ms; 0 where the op has no such part)."""
  apply = _jax_apply(op)
  a, b = (jnp.asarray(v) for v in _operands(op))
  out = jax.eval_shape(apply, a, b)
  cotangent = jnp.ones(out.shape, out.dtype)
  forward = jax.jit(apply)
  result = {"forward": timing.median_ms(lambda: forward(a, b).block_until_ready(), count)}
  for part, wanted in (("dgrad", Source.ACTIVATION), ("wgrad", Source.PARAMETER)):
    which = [i for i in (0, 1) if op.sources[i] == wanted]
    if not which:
      result[part] = 0.0
      continue
    grad = jax.jit(lambda a, b, g, which=tuple(which): tuple(
        jax.vjp(apply, a, b)[1](g)[i] for i in which))
    result[part] = timing.median_ms(lambda grad=grad: jax.block_until_ready(
        grad(a, b, cotangent)), count)
  return result


def _torch_conv(op: LinearOp, torch):
  """`op` as torch.nn.functional.conv2d on NCHW/OIHW tensors: (apply, operands)."""
  params = dict(op.params)
  lhs_spec, rhs_spec, _ = params["dimension_numbers"]
  if any(d != 1 for d in params["lhs_dilation"]) or params["batch_group_count"] != 1:
    raise UserError(f"{op.label}: no torch conv2d equivalent (input dilation or batch groups)")
  pads = params["padding"]
  symmetric = all(lo == hi for lo, hi in pads)

  def apply(x, k):
    if not symmetric:  # torch pads both sides alike: pad the input first
      x = torch.nn.functional.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    return torch.nn.functional.conv2d(
        x, k, stride=tuple(params["window_strides"]),
        padding=tuple(lo for lo, _ in pads) if symmetric else 0,
        dilation=tuple(params["rhs_dilation"]), groups=params["feature_group_count"])
  x, k = _operands(op)  # in the equation's layout, then as torch wants them
  return apply, [torch.from_numpy(np.ascontiguousarray(np.transpose(x, lhs_spec))),
                 torch.from_numpy(np.ascontiguousarray(np.transpose(k, rhs_spec)))]


def _in_xla_layout(op: LinearOp, torch_out: np.ndarray) -> np.ndarray:
  if op.primitive == "dot_general":
    return torch_out
  out_spec = dict(op.params)["dimension_numbers"][2]
  return np.transpose(torch_out, np.argsort(out_spec))


def _torch_dot(op: LinearOp, torch):
  """`op` as torch.einsum with the equation's contraction and batch axes."""
  (lc, rc), (lb, rb) = dict(op.params)["dimension_numbers"]
  lhs, rhs = op.shapes
  letters = iter(string.ascii_letters)
  left, right = [None] * len(lhs), [None] * len(rhs)
  for i, j in zip((*lb, *lc), (*rb, *rc), strict=True):
    left[i] = right[j] = next(letters)
  left = [c or next(letters) for c in left]
  right = [c or next(letters) for c in right]
  batch = [left[i] for i in lb]
  out = batch + [c for i, c in enumerate(left) if i not in (*lb, *lc)] + [
      c for j, c in enumerate(right) if j not in (*rb, *rc)]
  equation = f"{''.join(left)},{''.join(right)}->{''.join(out)}"
  return (lambda a, b: torch.einsum(equation, a, b),
          [torch.from_numpy(v) for v in _operands(op)])


def torch_ms(op: LinearOp, count: int, torch) -> dict[str, float]:
  """torch's forward, dgrad and wgrad of `op` (ms), after checking that torch computes
  the equation's values."""
  apply, (a, b) = (_torch_conv if op.primitive == "conv_general_dilated" else _torch_dot)(
      op, torch)
  with torch.no_grad():
    got = _in_xla_layout(op, apply(a, b).numpy())
  want = np.asarray(jax.jit(_jax_apply(op))(*_operands(op)))
  if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3,
                                                atol=1e-3 * np.abs(want).max()):
    raise AssertionError(f"{op.label}: torch's op is not the equation's "
                         f"({got.shape} vs {want.shape})")
  with torch.no_grad():
    result = {"forward": timing.median_ms(lambda: apply(a, b), count)}
  cotangent = torch.ones_like(apply(a, b))
  for part, wanted in (("dgrad", Source.ACTIVATION), ("wgrad", Source.PARAMETER)):
    which = [i for i in (0, 1) if op.sources[i] == wanted]
    if not which:
      result[part] = 0.0
      continue
    leaves = [t.detach().requires_grad_(i in which) for i, t in enumerate((a, b))]

    def backward(leaves=leaves, which=which):
      return torch.autograd.grad(apply(*leaves), [leaves[i] for i in which], cotangent)
    # A backward includes its forward in torch: subtract it, as XLA's vjp reuses none.
    result[part] = max(0.0, timing.median_ms(backward, count) - result["forward"])
  return result


def measure(name: str, size: int, batch: int, count: int, torch) -> dict:
  model = models.create(name, rngs=nnx.Rngs(0))
  images, _ = timing.random_batch(batch, size, 1)
  found = linear_ops(model, jax.jit(models.input_transform(model))(images))
  rows, totals = [], {side: dict.fromkeys(PARTS, 0.0) for side in ("xla", "torch")}
  for op, uses in sorted(found.items(), key=lambda item: item[0].label):
    row = {"op": op.label, "uses": uses, "xla_ms": xla_ms(op, count)}
    if torch is not None:
      row["torch_ms"] = torch_ms(op, count, torch)
    for side in ("xla", "torch"):
      for part in PARTS:
        totals[side][part] += uses * row.get(f"{side}_ms", {}).get(part, math.nan)
    rows.append(row)
  return {"model": name, "image_size": size, "batch": batch, "distinct_ops": len(found),
          "ops": sum(found.values()), "totals_ms": totals, "rows": rows}


def _parse(spec: str) -> tuple[str, int, int]:
  parts = spec.split(":")
  if len(parts) != 3 or not all(p.isdigit() for p in parts[1:]):
    raise app.UsageError(f"--models entry {spec!r} is not NAME:IMAGE_SIZE:BATCH")
  return parts[0], int(parts[1]), int(parts[2])


def _torch_or_none(ours_only: bool):
  if ours_only:
    return None
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    raise UserError("PyTorch is not installed: pip install torch (the comparison's other "
                    "side; not a dependency of bcos_jax), or pass --ours_only") from None
  torch.set_num_threads(_THREADS.value)
  return torch


def table(results: list[dict]) -> str:
  lines = ["| model | ops | XLA fwd / dgrad / wgrad (ms) | torch fwd / dgrad / wgrad | "
           "torch/XLA: fwd+dgrad (explanation) | fwd+dgrad+wgrad (train) |",
           "|---|---|---|---|---|---|"]
  for r in results:
    xla, tor = r["totals_ms"]["xla"], r["totals_ms"]["torch"]
    explain = (tor["forward"] + tor["dgrad"]) / (xla["forward"] + xla["dgrad"])
    train = sum(tor.values()) / sum(xla.values())
    torch_side = (f"{tor['forward']:.0f} / {tor['dgrad']:.0f} / {tor['wgrad']:.0f} | "
                  f"{explain:.2f}× | {train:.2f}×" if not math.isnan(train) else "– | – | –")
    lines.append(
        f"| {r['model']} {r['image_size']}² ×{r['batch']} | {r['ops']} | "
        f"{xla['forward']:.0f} / {xla['dgrad']:.0f} / {xla['wgrad']:.0f} | {torch_side} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  specs = [_parse(spec) for spec in _MODELS.value]  # every entry checked before any work
  torch = _torch_or_none(_OURS_ONLY.value)
  results = [measure(*spec, _COUNT.value, torch) for spec in specs]
  print(table(results))
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
      "torch": torch.__version__ if torch else None,
      "torch_threads": _THREADS.value if torch else None, "results": results}, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
