"""bcos_jax against the official B-cos code (v2, and v1's CIFAR-10 net) on the same network.

    pip install bcos torch torchvision     # the official side: optional, never a dependency
    python bench/vs_official.py --models resnet50:224:8,densenet121:224:8,vitc_ti_patch1_14:224:8 \\
        --rounds 3 --json bench/results/vs_official.json
    git clone https://github.com/moboehle/B-cos /tmp/B-cos     # the official v1 code
    python bench/vs_official.py --models v1_cifar9l_b2:32:64 --v1_repo /tmp/B-cos \\
        --json bench/results/vs_official_v1_cpu.json

Each model is NAME:IMAGE_SIZE:BATCH, NAME a hub name of the official v2
package (`bcos.models.pretrained`; its models are ours under the same name)
or one of the CVPR 2022 paper's CIFAR-10 nets, `v1_cifar9l_b1` ... `v1_cifar9l_b2.5`
(nine B-cos convolutions with MaxOut 2; ours in `bcos_jax/models/cifar.py`).
Those are not in the v2 package: `--v1_repo` names a checkout (or an
extracted tree) of the official v1 code, github.com/moboehle/B-cos, and the
official net is its own: `get_model` of `experiments/CIFAR10/bcos/model.py`
with the experiment `9L-M2-B<B>` of `experiment_parameters.py` (its layer
scale and logit temperature), `load_pretrained` off. The repository is read,
never changed; importing it takes two shims, both undone afterwards: a stub
for `training.training_utils` (the training loop, which `model.py` imports
for its `__main__` only) and `collections.Iterable` (removed in Python 3.10,
imported by `modules/losses.py`); its top-level modules (`data`, `modules`,
...) are taken out of `sys.modules` again. Only torch is needed for v1 (not
`bcos`).

The official model is built with random weights and imported into bcos_jax
through `bcos_jax.convert`, and both must give the same W(x) and logits on the
same inputs before anything is timed (so the comparison is of one network). Then,
in `--rounds` rounds that alternate which side runs first, each side's median
over `--steps` calls (after a warm-up) is taken of:

  train_step   forward, BCE on one-hot targets, backward, Adam update (batch)
  forward      evaluation-mode logits (batch)
  explain      W(x) of each image's top class, for the whole batch (one
               backward in the official explanation mode; `explain.explain`)
  explain_one  one image: the official `model.explain(img)` (W(x), contribution
               map, colour explanation) against `explain.explain` on a batch of
               one plus `explain.to_rgba`. v1 has no `explain`; its own way is
               timed (`interpretability/eval_on_video.py`): the layers'
               `explanation_mode(True)`, a forward, the backward of the top
               class's logit to the image (W(x) = its gradient), the
               contribution map sum_c x·W(x), and its `grad_to_img` (colour
               image, smooth 15, percentile 99.5 as `explain.to_rgba`). That
               function is compiled alone from `interpretability/utils.py`,
               whose import needs seaborn and sets LaTeX rcParams.

and the table gives official/ours per quantity (above 1: bcos_jax is faster),
the median over rounds and its spread (min-max over rounds). Both sides use
`--threads` CPU threads (torch.set_num_threads; XLA:CPU uses every core, so
pass the machine's core count). `--ours_only` times bcos_jax alone (no torch).
On a GPU: `--official_device=cuda` and the official side's speed settings
`--official_amp` (bf16 autocast in the train step), `--official_channels_last`,
`--official_compile` (torch.compile; eager if it fails), against bcos_jax with
`--compute_dtype=bfloat16`; `bench/gpu.sh` runs the whole comparison.
"""

import ast
import collections
import collections.abc
import contextlib
import copy
import dataclasses
import functools
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import types

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from timing import bcos_jax_functions, median_ms, random_batch

from bcos_jax import cli, convert, explain, models
from bcos_jax.errors import UserError

_MODELS = flags.DEFINE_list("models", ["resnet50:224:8"], "NAME:IMAGE_SIZE:BATCH, ...")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds per model.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed calls per quantity and round.")
_THREADS = flags.DEFINE_integer("threads", 2, "CPU threads of PyTorch.")
_OURS_ONLY = flags.DEFINE_boolean("ours_only", False, "Time bcos_jax alone (no torch needed).")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                                   "of bcos_jax's train step (parameters stay float32)")
_OFFICIAL_DEVICE = flags.DEFINE_string("official_device", "cpu", "torch device: cpu or cuda")
_OFFICIAL_AMP = flags.DEFINE_boolean("official_amp", False, "official train step in bf16 AMP")
_OFFICIAL_CHANNELS_LAST = flags.DEFINE_boolean("official_channels_last", False,
                                               "official side in channels_last")
_OFFICIAL_COMPILE = flags.DEFINE_boolean("official_compile", False,
                                         "torch.compile the official network")
_JSON = flags.DEFINE_string("json", "bench/results/vs_official.json", "The JSON file to write.")
_V1_REPO = flags.DEFINE_string("v1_repo", None, "A checkout of the official v1 code "
                               "(git clone https://github.com/moboehle/B-cos), for v1_cifar9l_*.")

QUANTITIES = ("train_step", "forward", "explain", "explain_one")
OFFICIAL_INSTALL = "pip install bcos torch torchvision"
V1_PREFIX = "v1_cifar9l_b"  # ours; the official v1 experiment is 9L-M2-B<same B>
V1_CLONE = "git clone https://github.com/moboehle/B-cos"
V1_MODEL_FILE = "experiments/CIFAR10/bcos/model.py"


def parse_spec(spec: str) -> tuple[str, int, int]:
  """'resnet50:224:8' -> ("resnet50", 224, 8)."""
  parts = spec.split(":")
  if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
    raise UserError(f"--models entry {spec!r} is not NAME:IMAGE_SIZE:BATCH (e.g. resnet50:224:8)")
  if parts[0] not in models.names():
    raise UserError(f"--models entry {spec!r}: {parts[0]!r} is not a bcos_jax model")
  return parts[0], int(parts[1]), int(parts[2])


def is_v1(name: str) -> bool:
  """Whether `name` is one of the v1 CIFAR-10 nets (official side from --v1_repo)."""
  return name.startswith(V1_PREFIX)


def check_v1_repo(names: list[str], v1_repo: str | None, ours_only: bool) -> None:
  """Fails, before torch is imported, when a v1 model's official side has no code to run.

  Raises:
    UserError: naming --v1_repo and the clone command, or the file that the path lacks.
  """
  wanted = [name for name in names if is_v1(name)]
  if not wanted or ours_only:
    return
  if not v1_repo:
    raise UserError(f"{wanted[0]} is a v1 model (not in the official v2 package): its official "
                    f"side needs --v1_repo=PATH, a checkout of the v1 code ({V1_CLONE}); "
                    "or pass --ours_only")
  if not (pathlib.Path(v1_repo) / V1_MODEL_FILE).is_file():
    raise UserError(f"--v1_repo={v1_repo} has no {V1_MODEL_FILE}: it should be a checkout of "
                    f"the official v1 code ({V1_CLONE})")


def _torch():
  """torch, or a UserError saying how to install the official side."""
  try:
    import torch  # noqa: PLC0415  (optional tooling)
  except ImportError as error:
    raise UserError(f"the official side needs torch ({error}): {OFFICIAL_INSTALL}; "
                    "or pass --ours_only") from error
  return torch


def _official_package():
  """The official v2 package and torch, or a UserError saying how to install them."""
  try:
    import bcos.models.pretrained as hub  # noqa: PLC0415  (optional tooling)
    import torch  # noqa: PLC0415
  except ImportError as error:
    raise UserError(f"the official side needs the official package ({error}): "
                    f"{OFFICIAL_INSTALL}; or pass --ours_only") from error
  return hub, torch


# The v1 repository's top-level modules: imported from it alone, and taken out again.
_V1_TOP_LEVEL = ("data", "experiments", "modules", "training", "interpretability", "models",
                 "project_utils", "project_config", "experiment_utils")


def _v1_top_level(name: str) -> bool:
  return name.split(".")[0] in _V1_TOP_LEVEL


@functools.cache
def v1_code(v1_repo: str) -> types.SimpleNamespace:
  """The official v1 CIFAR-10 code: `get_model`, the experiment configs `exps`, `grad_to_img`.

  The repository is imported from its root, with the shims of the module
  docstring, and its modules leave `sys.modules` afterwards (the functions
  keep what they need), so nothing of it shadows a later import.
  """
  _torch()
  root = str(pathlib.Path(v1_repo).resolve())
  saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _v1_top_level(k)}
  training = types.ModuleType("training")
  training_utils = types.ModuleType("training.training_utils")
  training_utils.start_training = None  # model.py's __main__ only; it imports the trainer
  training.training_utils = training_utils
  sys.modules |= {"training": training, "training.training_utils": training_utils}
  had_iterable = hasattr(collections, "Iterable")
  if not had_iterable:
    collections.Iterable = collections.abc.Iterable  # modules/losses.py (Python < 3.10)
  sys.path.insert(0, root)
  try:
    import importlib  # noqa: PLC0415

    params = importlib.import_module("experiments.CIFAR10.bcos.experiment_parameters")
    model = importlib.import_module("experiments.CIFAR10.bcos.model")
    to_numpy = importlib.import_module("project_utils").to_numpy
  finally:
    sys.path.remove(root)
    if not had_iterable:
      del collections.Iterable
    for k in [k for k in sys.modules if _v1_top_level(k)]:
      del sys.modules[k]
    sys.modules |= saved
  return types.SimpleNamespace(get_model=model.get_model, exps=params.exps,
                               grad_to_img=_v1_grad_to_img(root, to_numpy))


def _v1_grad_to_img(root: str, to_numpy):
  """`grad_to_img` of the v1 `interpretability/utils.py`, compiled alone (see the docstring)."""
  import torch  # noqa: PLC0415
  import torch.nn.functional as F  # noqa: N812, PLC0415

  path = pathlib.Path(root) / "interpretability" / "utils.py"
  tree = ast.parse(path.read_text(), str(path))
  found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grad_to_img"]
  if not found:
    raise UserError(f"{path} has no grad_to_img: is --v1_repo a checkout of {V1_CLONE}?")
  namespace = {"torch": torch, "np": np, "F": F, "to_numpy": to_numpy}
  exec(compile(ast.Module(body=found, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
  return namespace["grad_to_img"]


def official_v1_model(name: str, v1_repo: str):
  """The official v1 CIFAR-10 net of `name` (experiment 9L-M2-B<B>), randomly initialised.

  It is the official `nn.Sequential` itself (same modules, same state-dict
  keys), given the two things the v2 models have and the timing uses: an
  `explanation_mode()` context (v1 switches its layers' `explanation_mode`)
  and `explain(image)`, v1's own one-image explanation (module docstring).
  """
  torch = _torch()
  code = v1_code(v1_repo)
  experiment = "9L-M2-B" + name.removeprefix(V1_PREFIX)
  if experiment not in code.exps:
    raise UserError(f"{name!r} has no official v1 experiment ({experiment!r} is not in "
                    f"experiment_parameters.py, which has {', '.join(code.exps)})")
  params = copy.deepcopy(code.exps[experiment]) | {"load_pretrained": False}
  grad_to_img = code.grad_to_img

  class OfficialV1(torch.nn.Sequential):
    """The official v1 Sequential, with v2's explanation interface around it."""

    @contextlib.contextmanager
    def explanation_mode(self):
      layers = [m for m in self.modules() if hasattr(m, "explanation_mode") and m is not self]
      for layer in layers:
        layer.explanation_mode(True)
      try:
        yield
      finally:
        for layer in layers:
          layer.explanation_mode(False)

    def explain(self, image):
      image = image.detach().requires_grad_(True)
      with torch.enable_grad(), self.explanation_mode():
        logits = self(image)
        target = int(logits[0].argmax())
        logits[0, target].backward(inputs=[image])
      weights = image.grad
      return {"prediction": target, "dynamic_linear_weights": weights,
              "contribution_map": (image * weights).sum(1).detach(),
              "explanation": grad_to_img(image[0].detach(), weights[0])}

  return OfficialV1(*code.get_model(params).children()).eval()


def official_model(name: str, v1_repo: str | None = None):
  """The official model `name` (v2 hub, or v1 from `v1_repo`), randomly initialised, in
  evaluation mode."""
  if is_v1(name):
    check_v1_repo([name], v1_repo, ours_only=False)
    return official_v1_model(name, v1_repo)
  hub, _ = _official_package()
  if name not in hub.list_available():
    raise UserError(f"{name!r} is not a model of the official v2 package; its models: "
                    f"{', '.join(hub.list_available())}")
  return getattr(hub, name)(pretrained=False).eval()


def imported(name: str, net) -> nnx.Module:
  """`net`'s weights in the bcos_jax model of the same name (`convert`)."""
  state_dict = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
  return convert.from_torch_state_dict(name, state_dict)


def check_parity(model: nnx.Module, net, images_uint8: np.ndarray) -> dict[str, float]:
  """How far apart the two sides are on the same images: logits, and W(x) of class 0.

  A randomly initialised network's logits are nearly its logit bias (their
  input-dependent part is ~1e-5 of it), so the check that matters is on W(x),
  which the bias does not enter: the dynamic linear map of class 0 for every image.

  Raises:
    AssertionError: when the W(x) differ by more than 1e-4 of their largest entry, or the
      logits by more than 1e-4 of theirs.
  """
  torch = _torch()
  x6 = np.asarray(models.input_transform(model)(images_uint8))
  ours = np.asarray(model(x6))
  target = np.zeros(len(x6), np.int32)
  ours_w = np.asarray(explain.explain(model, x6, target).weights)
  inputs = torch.from_numpy(x6.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  with torch.enable_grad(), net.explanation_mode():
    logits = net(inputs)
    logits[:, 0].sum().backward(inputs=[inputs])
  theirs, theirs_w = logits.detach().numpy(), inputs.grad.numpy().transpose(0, 2, 3, 1)
  result = {"logits_max_abs_diff": float(np.abs(ours - theirs).max()),
            "weights_max_abs_diff": float(np.abs(ours_w - theirs_w).max()),
            "weights_max_abs": float(np.abs(theirs_w).max())}
  if (result["weights_max_abs_diff"] > 1e-4 * result["weights_max_abs"]
      or result["logits_max_abs_diff"] > 1e-4 * max(float(np.abs(theirs).max()), 1.0)):
    raise AssertionError(f"bcos_jax and the official code disagree ({result}); nothing timed")
  return result


@dataclasses.dataclass(frozen=True)
class OfficialSettings:
  """How the official side runs: its device, and the speed settings a user would turn on.

  amp: torch.autocast in bfloat16 for the train step (parameters stay float32);
  channels_last: the NHWC memory format for the network and its inputs;
  compile: torch.compile the network (falls back to eager, saying so, if it fails).
  """
  device: str = "cpu"
  amp: bool = False
  channels_last: bool = False
  compile: bool = False

  @property
  def name(self) -> str:
    on = [n for n in ("amp", "channels_last", "compile") if getattr(self, n)]
    return "+".join(on) or "eager"


def official_functions(net, images_uint8: np.ndarray, labels: np.ndarray, model: nnx.Module,
                       num_classes: int, settings: OfficialSettings = OfficialSettings()):
  """The official side's timed functions, computing what `bcos_jax_functions` does."""
  torch = _torch()
  device = torch.device(settings.device)
  memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
  x6 = np.asarray(models.input_transform(model)(images_uint8)).transpose(0, 3, 1, 2).copy()
  x = torch.from_numpy(x6).to(device).contiguous(memory_format=memory_format)
  net = net.eval().to(device).to(memory_format=memory_format)
  trained = copy.deepcopy(net).train()
  run_eval, run_train = net, trained
  if settings.compile:
    try:
      run_eval, run_train = torch.compile(net), torch.compile(trained)
      run_eval(x[:1])  # compile errors show here, not in the timing
    except Exception as error:  # noqa: BLE001  (any compiler failure: time eager instead)
      print(f"torch.compile failed for the official side ({type(error).__name__}: {error}); "
            "timing it eager")
      run_eval, run_train = net, trained

  def synchronized(fn):
    if device.type != "cuda":
      return fn
    return lambda: (fn(), torch.cuda.synchronize())[0]

  def forward():
    with torch.no_grad():
      return run_eval(x)

  def explain_batch():
    inputs = x.clone().requires_grad_(True)
    with torch.enable_grad(), net.explanation_mode():
      # Each image's logit depends on its own input only: one backward gives every W(x).
      run_eval(inputs).max(1).values.sum().backward(inputs=[inputs])
    return inputs.grad

  def explain_one():
    return net.explain(x[:1].clone().requires_grad_(True))

  optimizer = torch.optim.Adam(trained.parameters(), lr=1e-3)
  targets = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(labels, np.int64)),
                                        num_classes).float().to(device)
  autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if settings.amp
              else contextlib.nullcontext())

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      logits = run_train(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
    loss.backward()
    optimizer.step()
    return loss.item()

  return {"train_step": synchronized(train_step), "forward": synchronized(forward),
          "explain": synchronized(explain_batch), "explain_one": synchronized(explain_one)}


def measure(spec: str, rounds: int, count: int, ours_only: bool, compute_dtype: str = "float32",
            settings: OfficialSettings = OfficialSettings(), v1_repo: str | None = None) -> dict:
  name, size, batch = parse_spec(spec)
  if ours_only:
    model = models.create(name, rngs=nnx.Rngs(0))
  else:
    net = official_model(name, v1_repo)
    model = imported(name, net)
  num_classes = int(np.asarray(model(np.zeros((1, size, size, 6), np.float32))).shape[-1])
  images, labels = random_batch(batch, size, num_classes)
  row = {"model": name, "image_size": size, "batch_size": batch, "ours": {}, "official": {},
         "ours_compute_dtype": compute_dtype, "official_settings": settings.name}
  if not ours_only:
    row["parity"] = check_parity(model, net, np.asarray(images[:2]))  # on the CPU, before moving
  sides = {"ours": bcos_jax_functions(model, images, labels, compute_dtype)}
  if not ours_only:
    sides["official"] = official_functions(net, np.asarray(images), np.asarray(labels), model,
                                           num_classes, settings)
  for quantity in QUANTITIES:
    for side in sides:
      row[side][quantity] = []
    for r in range(rounds):
      order = list(sides) if r % 2 == 0 else list(reversed(sides))  # alternate who goes first
      for side in order:
        row[side][quantity].append(median_ms(sides[side][quantity], count))
  for quantity in QUANTITIES:
    ours = row["ours"][quantity]
    row.setdefault("ours_ms", {})[quantity] = statistics.median(ours)
    if not ours_only:
      theirs = row["official"][quantity]
      ratios = [t / o for t, o in zip(theirs, ours, strict=True)]
      row.setdefault("official_ms", {})[quantity] = statistics.median(theirs)
      row.setdefault("ratio", {})[quantity] = {"median": statistics.median(ratios),
                                               "min": min(ratios), "max": max(ratios)}
  return row


def table(rows: list[dict]) -> str:
  first = rows[0] if rows else {}
  lines = [f"bcos_jax train step in {first.get('ours_compute_dtype')}; official: "
           f"{first.get('official_settings')}",
           f"{'model':<22}{'size':>5}{'batch':>6}  {'quantity':<12}{'ours ms':>10}"
           f"{'official ms':>13}{'official/ours':>15}  spread"]
  for row in rows:
    for quantity in QUANTITIES:
      ours = row["ours_ms"][quantity]
      line = (f"{row['model']:<22}{row['image_size']:>5}{row['batch_size']:>6}  "
              f"{quantity:<12}{ours:>10.1f}")
      if "ratio" in row:
        ratio = row["ratio"][quantity]
        line += (f"{row['official_ms'][quantity]:>13.1f}{ratio['median']:>14.2f}×  "
                 f"{ratio['min']:.2f}-{ratio['max']:.2f}")
      lines.append(line)
  return "\n".join(lines)


def _v1_commit(v1_repo: str) -> str:
  """The v1 checkout's commit (its path where it is no git checkout, e.g. an archive)."""
  if not (pathlib.Path(v1_repo) / ".git").exists():
    return str(v1_repo)
  result = subprocess.run(["git", "-C", v1_repo, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
  return result.stdout.strip() if result.returncode == 0 else str(v1_repo)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  specs = [parse_spec(spec) and spec for spec in _MODELS.value]  # bad entries fail first
  names = [parse_spec(spec)[0] for spec in specs]
  check_v1_repo(names, _V1_REPO.value, _OURS_ONLY.value)  # before torch is imported
  environment = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
                 "cpu_threads": _THREADS.value, "machine": platform.processor() or
                 platform.machine()}
  if not _OURS_ONLY.value:
    torch = _torch()
    torch.set_num_threads(_THREADS.value)
    environment["torch"] = torch.__version__
    if not all(map(is_v1, names)):
      _official_package()
      import bcos  # noqa: PLC0415

      environment["bcos"] = getattr(bcos, "__version__", "?")
    if any(map(is_v1, names)):
      environment["v1_repo"] = _v1_commit(_V1_REPO.value)
  settings = OfficialSettings(_OFFICIAL_DEVICE.value, _OFFICIAL_AMP.value,
                              _OFFICIAL_CHANNELS_LAST.value, _OFFICIAL_COMPILE.value)
  rows = [measure(spec, _ROUNDS.value, _STEPS.value, _OURS_ONLY.value, _COMPUTE_DTYPE.value,
                  settings, _V1_REPO.value) for spec in specs]
  print(table(rows))
  out = pathlib.Path(_JSON.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"environment": environment, "rounds": _ROUNDS.value,
                             "steps": _STEPS.value, "rows": rows}, indent=2))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  cli.run(main)
