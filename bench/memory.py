"""Per-device memory of the train step: parameters, Adam's state, temporaries; does it fit?

    python bench/memory.py --models resnet50,densenet121 --fsdp 1,8 --remat false,true \\
        --devices 8 --batch_size 256 --image_size 224 --budget_gib 16 \\
        --json bench/results/memory.json

Nothing is allocated and nothing runs: for every configuration (model × fsdp ×
remat) the train state is built abstractly (`nnx.eval_shape` and
`jax.eval_shape` around `bcos_jax.train.state.create`, Adam), and
`bcos_jax.train.steps.make_train_step` is lowered on `jax.ShapeDtypeStruct`s
that carry the shardings of `bcos_jax.sharding.state_sharding` and compiled.
Per device, the table gives

  params      the parameters' shards (`sharding.shard_shape` of each leaf; the
              norm statistics and random streams are in `state` in the JSON)
  optimiser   Adam's two moments (and its step count)
  temporaries the compiled step's `memory_analysis().temp_size_in_bytes`
              (activations kept for the backward pass, gradients, workspace)
  total       what the compiled step holds at once: its arguments (state shard,
              batch shard) + temporaries + outputs not donated into the arguments

`--batch_size` is the global batch (split over all devices); `--model NAME` or
`--models A,B`; `--remat` alone means `--remat true`, `--remat false,true` both
(the DenseNet, ResNet, ConvNeXt and ViT families have the option).

Devices: `--devices D` takes the first D devices of the default backend. On
CPU, the script sets `XLA_FLAGS=--xla_force_host_platform_device_count=D`
before JAX is imported, so D fake host devices stand in for D accelerators.
The CPU compiler's numbers only approximate an accelerator's: XLA:CPU fuses and
schedules differently (e.g. its temporaries hold unfused intermediates a GPU or
TPU compiler would fuse away), which is why the table states the backend. On
CPU the script also keeps `jax.checkpoint`'s optimisation barriers
(`--xla_disable_hlo_passes=cse_barrier_expander`): XLA:CPU otherwise drops them
early and merges the recomputation back into the forward pass, so remat would
save nothing there, while accelerator compilers keep them.

`--budget_gib` (e.g. 16 for a TPU v4 chip, 80 for an H100) marks the
configurations whose total fits, and, per family of the requested models and per
(fsdp, remat) setting, searches for the largest registered model of that
family that fits at the same batch and image size: the family's distinct
architectures (registry entries with identical builder arguments count once,
e.g. resnet50 and resnet50_long) are tried from the most parameters down, the
first that fits wins, and at most `--max_search` of them are compiled per
family and setting (default 3, 0 for no search; configurations already measured
are reused); if none of those fits, the output says which were tried.
"""

import os
import sys


def host_device_flags(argv: list[str], xla_flags: str) -> str:
  """XLA_FLAGS for a CPU run of `argv`: D host devices (--devices D) and kept remat barriers.

  Reads --devices from the raw command line, because the flags must be set before
  JAX is imported (absl parses the flags later). Flags already present are kept.
  """
  devices = None
  for i, arg in enumerate(argv):
    if arg.startswith("--devices="):
      devices = arg.split("=", 1)[1]
    elif arg == "--devices" and i + 1 < len(argv):
      devices = argv[i + 1]
  flags = xla_flags.split()
  if devices and devices.isdigit() and not any(
      f.startswith("--xla_force_host_platform_device_count") for f in flags):
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  if not any(f.startswith("--xla_disable_hlo_passes") for f in flags):
    flags.append("--xla_disable_hlo_passes=cse_barrier_expander")
  return " ".join(flags)


def _runs_on_cpu(environ) -> bool:
  """Whether JAX will pick the CPU (asked before JAX is imported, so without it)."""
  import importlib.util
  import pkgutil
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  plugins = importlib.util.find_spec("jax_plugins")
  found = [m.name for m in pkgutil.iter_modules(plugins.submodule_search_locations)
           ] if plugins and plugins.submodule_search_locations else []
  return not found and importlib.util.find_spec("libtpu") is None


def bare_remat(argv: list[str]) -> list[str]:
  """`--remat` without a value (the next word is another flag, or none) -> `--remat=true`."""
  out = []
  for i, arg in enumerate(argv):
    following = argv[i + 1] if i + 1 < len(argv) else "--"
    out.append("--remat=true" if arg == "--remat" and following.startswith("-") else arg)
  return out


if __name__ == "__main__":
  sys.argv = bare_remat(sys.argv)
  if _runs_on_cpu(os.environ):
    os.environ["XLA_FLAGS"] = host_device_flags(sys.argv, os.environ.get("XLA_FLAGS", ""))

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from bcos_jax import cli, models, sharding  # noqa: E402
from bcos_jax.errors import UserError  # noqa: E402
from bcos_jax.train import state as train_state  # noqa: E402
from bcos_jax.train import steps  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "One model (or use --models).")
_MODELS = flags.DEFINE_list("models", [], f"Models: any of {', '.join(models.names())}")
_FSDP = flags.DEFINE_list("fsdp", ["1"], "FSDP sizes (each must divide --devices).")
_REMAT = flags.DEFINE_list("remat", ["false"], "false, true, or false,true.")
_DEVICES = flags.DEFINE_integer("devices", None, "Devices (default: all of the backend's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Image height and width.")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                                   "of the training step (parameters stay float32)")
_BUDGET_GIB = flags.DEFINE_float("budget_gib", None,
                                 "Memory per device (16: TPU v4, 80: H100): marks what fits "
                                 "and searches each family's largest fitting model.")
_MAX_SEARCH = flags.DEFINE_integer("max_search", 3,
                                   "Models compiled per family and setting in that search "
                                   "(0: no search).")
_JSON = flags.DEFINE_string("json", "bench/results/memory.json", "The JSON file to write.")

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Setting:
  """One configuration of the table."""
  model: str
  fsdp: int
  remat: bool


def parse_bools(values: list[str]) -> list[bool]:
  """["false", "true"] -> [False, True]."""
  known = {"false": False, "true": True, "0": False, "1": True}
  bad = [v for v in values if v.strip().lower() not in known]
  if bad:
    raise UserError(f"--remat takes false and/or true, got {bad}")
  return [known[v.strip().lower()] for v in values]


def parse_ints(values: list[str], name: str) -> list[int]:
  if not all(v.strip().isdigit() and int(v) > 0 for v in values):
    raise UserError(f"--{name} takes positive integers, got {values}")
  return [int(v) for v in values]


def _leaf_bytes(leaf, leaf_sharding) -> int:
  """Bytes of the shard of `leaf` that one device holds (random keys as their integers)."""
  shape = leaf_sharding.shard_shape(leaf.shape)
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, leaf.dtype))
    return math.prod(data.shape) * data.dtype.itemsize
  return math.prod(shape) * leaf.dtype.itemsize


def per_device_bytes(tree, shardings) -> int:
  """Sum over the leaves of a state tree of the bytes of one device's shard."""
  return sum(jax.tree.leaves(jax.tree.map(_leaf_bytes, tree, shardings)))


def abstract_state(name: str, remat: bool, optimizer: optax.GradientTransformation
                   ) -> tuple[nnx.GraphDef, train_state.TrainState]:
  """The graphdef and the shapes of a fresh train state (no array is allocated)."""
  overrides = {"remat": True} if remat else {}
  abstract_model = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **overrides))
  graphdef, _, _ = train_state.split_model(abstract_model)
  state = jax.eval_shape(
      lambda: train_state.create(models.create(name, rngs=nnx.Rngs(0), **overrides),
                                 optimizer, ema=False)[1])
  return graphdef, state


def parameter_count(name: str) -> int:
  """Parameters of the registered model `name` (abstractly)."""
  abstract_model = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0)))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(abstract_model, nnx.Param)))


def measure(setting: Setting, *, devices: int, batch_size: int, image_size: int,
            compute_dtype: str = "float32") -> dict:
  """Per-device bytes of one configuration's train step (lowered and compiled only)."""
  mesh = sharding.make_mesh(devices, setting.fsdp)
  sharding.check_batch_divides(batch_size, mesh)
  optimizer = optax.adam(1e-3)
  graphdef, state = abstract_state(setting.model, setting.remat, optimizer)
  shardings = sharding.state_sharding(state, mesh)
  abstract = sharding.abstract_state(state, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {"image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8,
                                         sharding=batch_sharding),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=batch_sharding)}
  start = time.perf_counter()
  step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-3), mesh, state,
                               steps.StepOptions(compute_dtype=compute_dtype))
  analysis = step.lower(abstract, batch).compile().memory_analysis()
  compile_s = time.perf_counter() - start
  row = {**dataclasses.asdict(setting), "batch_size": batch_size, "image_size": image_size,
         "devices": devices, "compute_dtype": compute_dtype,
         "params_bytes": per_device_bytes(state.params, shardings.params),
         "state_bytes": per_device_bytes(state.model_state, shardings.model_state),
         "optimizer_bytes": per_device_bytes(state.opt_state, shardings.opt_state),
         "temp_bytes": analysis.temp_size_in_bytes,
         "argument_bytes": analysis.argument_size_in_bytes,
         "output_bytes": analysis.output_size_in_bytes,
         "alias_bytes": analysis.alias_size_in_bytes,
         "compile_s": round(compile_s, 1)}  # tracing, lowering and compiling
  row["total_bytes"] = (row["argument_bytes"] + row["temp_bytes"] + row["output_bytes"]
                        - row["alias_bytes"])
  return row


def distinct_members(name: str) -> list[str]:
  """The registered models of `name`'s family, one name per distinct architecture."""
  family = models.info(name).family
  seen, members = set(), []
  for member in sorted(models.names(), key=lambda n: (len(n), n)):  # short names first
    if models.info(member).family is not family:
      continue
    kwargs = models.config_for(member).kwargs
    if kwargs not in seen:
      seen.add(kwargs)
      members.append(member)
  return members


def largest_fitting(candidates: list[str], fits: Callable[[str], bool], max_tries: int
                    ) -> tuple[str | None, list[str]]:
  """The first candidate (largest first) that fits, trying at most `max_tries`.

  Returns:
    (the name or None, the names tried).
  """
  tried = []
  for name in candidates[:max_tries]:
    tried.append(name)
    if fits(name):
      return name, tried
  return None, tried


def gib(value: int) -> str:
  return f"{value / GIB:.3f}"


def table(rows: list[dict], budget_gib: float | None) -> str:
  lines = [f"{'model':<22}{'fsdp':>5}{'remat':>7}{'batch':>7}{'size':>6}{'params':>9}"
           f"{'optimiser':>11}{'temporaries':>13}{'total':>9}" + ("  fits" if budget_gib else "")]
  for r in rows:
    line = (f"{r['model']:<22}{r['fsdp']:>5}{str(r['remat']).lower():>7}{r['batch_size']:>7}"
            f"{r['image_size']:>6}{gib(r['params_bytes']):>9}{gib(r['optimizer_bytes']):>11}"
            f"{gib(r['temp_bytes']):>13}{gib(r['total_bytes']):>9}")
    if budget_gib:
      line += "  yes" if r["fits"] else "  no"
    lines.append(line)
  return "\n".join(lines)


def requested_settings(names: list[str], fsdps: list[int], remats: list[bool]) -> list[Setting]:
  """Every model × fsdp × remat, checked before anything is compiled."""
  unknown = [n for n in names if n not in models.names()]
  if unknown:
    raise UserError(f"unknown model(s) {unknown}; valid names: {', '.join(models.names())}")
  if True in remats:
    for name in names:
      models.config_for(name, remat=True)  # a UserError naming the valid options if absent
  return [Setting(n, f, r) for n in names for f in fsdps for r in remats]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  names = ([_MODEL.value] if _MODEL.value else []) + list(_MODELS.value)
  if not names:
    raise UserError("name a model: --model NAME or --models A,B")
  devices = _DEVICES.value or jax.device_count()
  if devices > jax.device_count():
    raise UserError(f"--devices {devices}, but the {jax.default_backend()} backend has "
                    f"{jax.device_count()}; use fewer, or JAX_PLATFORMS=cpu for fake host "
                    "devices")
  fsdps = parse_ints(_FSDP.value, "fsdp")
  settings = requested_settings(names, fsdps, parse_bools(_REMAT.value))
  backend = f"{jax.default_backend()} ({jax.devices()[0].device_kind}, {devices} devices)"
  print(f"backend: {backend}; per-device GiB of the compiled train step (Adam, "
        f"{_COMPUTE_DTYPE.value})" + ("; CPU numbers approximate an accelerator's"
                                       if jax.default_backend() == "cpu" else ""), flush=True)
  budget = _BUDGET_GIB.value
  measured: dict[Setting, dict] = {}

  def row_of(setting: Setting) -> dict:
    if setting not in measured:
      row = measure(setting, devices=devices, batch_size=_BATCH_SIZE.value,
                    image_size=_IMAGE_SIZE.value, compute_dtype=_COMPUTE_DTYPE.value)
      row["fits"] = None if budget is None else row["total_bytes"] <= budget * GIB
      print(f"  {setting.model} fsdp={setting.fsdp} remat={str(setting.remat).lower()}: "
            f"{gib(row['total_bytes'])} GiB (compiled in {row['compile_s']:.0f} s)", flush=True)
      measured[setting] = row
    return measured[setting]

  def fits(name: str, fsdp: int, remat: bool) -> bool:
    try:
      return row_of(Setting(name, fsdp, remat))["fits"]
    except UserError as error:  # e.g. an image size its patches do not divide
      print(f"  {name}: not tried ({error})", flush=True)
      return False

  rows = [row_of(s) for s in settings]
  largest = []
  if budget is not None and _MAX_SEARCH.value > 0:
    for family in dict.fromkeys(models.info(n).family.name for n in names):
      member = next(n for n in names if models.info(n).family.name == family)
      candidates = sorted(distinct_members(member), key=parameter_count, reverse=True)
      for fsdp in fsdps:
        for remat in dict.fromkeys(s.remat for s in settings):
          name, tried = largest_fitting(
              candidates, lambda n, f=fsdp, r=remat: fits(n, f, r), _MAX_SEARCH.value)
          largest.append({"family": family, "fsdp": fsdp, "remat": remat,
                          "largest_fitting": name, "tried": tried})
  print(table(rows, budget))
  for entry in largest:
    found = entry["largest_fitting"] or f"none of {', '.join(entry['tried'])}"
    print(f"largest {entry['family']} within {budget:g} GiB at fsdp={entry['fsdp']} "
          f"remat={str(entry['remat']).lower()}: {found}")
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"backend": jax.default_backend(),
                             "device_kind": jax.devices()[0].device_kind, "devices": devices,
                             "xla_flags": os.environ.get("XLA_FLAGS", ""),
                             "budget_gib": budget, "rows": rows,
                             "searched": [r for s, r in measured.items() if s not in settings],
                             "largest_fitting": largest,
                             "command": " ".join(["python", "bench/memory.py", *sys.argv[1:]])},
                            indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
