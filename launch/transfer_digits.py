"""Transfer learning at small scale, offline: digits 0-4 -> digits 5-9, three ways.

    python launch/transfer_digits.py --root=/tmp/transfer_digits

1. pretrain: the digits network (`configs/digits.py`'s model) trained on the
   classes 0-4 only (`config.classes`) into ROOT/pretrain;
2. on the classes 5-9 (relabelled 0-4), for the same number of steps each:
   linear_probe (a new head on the frozen pretrained network,
   `config.finetune.mode=linear_probe`, at --probe_lr), full (a new head,
   everything trained, the backbone at a tenth of the head's rate) and
   scratch (the same network from a random initialisation, the digits recipe).
Each stage is measured on its classes' test digits: top-1 accuracy (at the
end, and at the training's first evaluation after step 0, which shows how
fast it learns) and the localisation metric of the model's own explanations
(x·W(x), 2×2 grids, smoothing 1, as `launch/b_ablation.py`, but of every
correctly classified digit: conf_thresh 0), with its training's wall time. A
stage writes ROOT/<stage>/result.json when done and is skipped when the
launcher runs again with the same settings (an interrupted training resumes
from its checkpoint; its time is then that of the resumed part);
ROOT/transfer_digits.json and .md hold every stage. The full run takes about
4 minutes on 2 CPU cores.
"""

import importlib.util
import json
import pathlib
import time

import numpy as np
from absl import flags

from bcos_jax import cli, console, stages

_ROOT = flags.DEFINE_string("root", "/tmp/transfer_digits", "Every stage's directory goes here.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")
_WIDTH = flags.DEFINE_string("width", "0.25", "configs/digits.py's width variant.")
_EPOCHS = flags.DEFINE_float("epochs", 10, "Epochs of every training (on ~720 digits each).")
_STEPS = flags.DEFINE_integer("steps", None, "Steps of every training (instead of --epochs).")
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (Adam, 1 warm-up epoch, cosine) of "
                         "pretrain, scratch and the full fine-tuning's head (its backbone: a "
                         "tenth of it).")
_PROBE_LR = flags.DEFINE_float("probe_lr", 3e-2, "Peak learning rate of the linear probe: a "
                               "head alone on fixed features takes a larger one (of 1e-3, 1e-2, "
                               "3e-2 and 1e-1, 3e-2 probed best here).")
_GRIDS = flags.DEFINE_integer("grids", 50, "2×2 grids per model (0: no localisation).")
_EXPLANATIONS = flags.DEFINE_integer("explanations", 4, "Test digits explained (PNG) at every "
                                     "evaluation of a training.")

CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "digits.py"
SOURCE_CLASSES, TARGET_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
STAGES = ("pretrain", "linear_probe", "full", "scratch")
BACKBONE_LR_FACTOR = 0.1
# What the table says each stage starts from and trains.
DESCRIPTIONS = {"pretrain": ("random", "all"), "linear_probe": ("pretrain", "new head only"),
                "full": ("pretrain", f"all, new head (backbone lr ×{BACKBONE_LR_FACTOR:g})"),
                "scratch": ("random", "all")}


def _digits_config(classes: tuple[int, ...]):
  """configs/digits.py (model, data, recipe, cadence) on `classes`, with this run's length."""
  spec = importlib.util.spec_from_file_location("digits_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"width={_WIDTH.value}")
  config.data_dir = _DATA_DIR.value
  config.classes = classes
  config.num_epochs = _EPOCHS.value
  config.num_steps = _STEPS.value
  config.optimizer.learning_rate = _LR.value
  config.num_explanations = _EXPLANATIONS.value
  return config


def stage_config(stage: str, root: pathlib.Path):
  """The training config of `stage`."""
  from ml_collections import ConfigDict  # noqa: PLC0415
  if stage in ("pretrain", "scratch"):
    config = _digits_config(SOURCE_CLASSES if stage == "pretrain" else TARGET_CLASSES)
    config.model.overrides.num_classes = len(config.classes)
    return config
  config = _digits_config(TARGET_CLASSES)
  config.model.name = ""  # the pretrained network's architecture, its widths included
  config.model.overrides = ConfigDict()
  config.init_from = str(root / "pretrain")
  config.finetune.new_head = True
  config.finetune.mode = stage
  if stage == "full":
    config.finetune.backbone_lr_factor = BACKBONE_LR_FACTOR
  else:
    config.optimizer.learning_rate = _PROBE_LR.value
  return config


def _settings() -> dict:
  """What every stage's result depends on (the later stages start from the first)."""
  return {"width": _WIDTH.value, "epochs": _EPOCHS.value, "steps": _STEPS.value,
          "lr": _LR.value, "probe_lr": _PROBE_LR.value, "grids": _GRIDS.value,
          "data_dir": _DATA_DIR.value}


def localise(workdir: pathlib.Path, config) -> dict:
  """The localisation of x·W(x) on the stage's test digits, when grids can be made."""
  from bcos_jax import data, models  # noqa: PLC0415
  from bcos_jax.evaluate import accuracy, attribution, localisation  # noqa: PLC0415

  row = {"grids": 0, "localisation": None}
  if not _GRIDS.value:
    return row
  model = models.load(workdir)
  recipe = data.get_recipe(config.recipe)
  source = data.open_source(config.dataset, config.eval_split, config.data_dir, config.classes)
  # Grids of every correctly classified digit (the v2 papers' conf_thresh=0): the probe is
  # rarely confident (sigmoid > 0.5), and would get no grid of the v1 protocol. A small test
  # set: a model with few correct digits gets fewer grids (none: no score).
  setting = localisation.Setting(n_imgs=4, count=_GRIDS.value, smooth=1, conf_thresh=0.0,
                                 allow_fewer=True)
  results = accuracy.classify(model, source, recipe.eval)
  order = localisation.sample_grid_indices(results.label, results.top_logit, results.correct,
                                           setting.n_imgs, setting.conf_thresh,
                                           num_classes=source.num_classes)
  if len(order) >= setting.n_imgs:
    scores = localisation.run(model, source, recipe.eval, recipe.eval,
                              attribution.methods_by_name(["bcos"]), setting)["bcos"]
    localisation.write_results(workdir / "localisation", {"bcos": scores}, setting,
                               workdir.name)
    row["grids"] = len(scores) // setting.n_imgs
    row["localisation"] = {"median": float(np.median(scores)), "mean": float(np.mean(scores))}
  return row


def run_stage(stage: str, root: pathlib.Path, settings: dict) -> dict:
  """One stage, or its stored result when it was done with the same settings."""
  from bcos_jax.train import train_and_evaluate  # noqa: PLC0415
  from bcos_jax.train.metric_writer import read  # noqa: PLC0415

  directory = root / stage
  done = stages.finished(directory, settings)
  if done is not None:
    console.say(f"{stage}: done before ({directory / stages.RESULT_FILE}), not redone")
    return done
  console.say(f"{stage}: into {directory}")
  config = stage_config(stage, root)
  start = time.perf_counter()
  train_and_evaluate(config, directory)  # a finished training resumes to its end
  seconds = time.perf_counter() - start
  # Every evaluation of the training (a resumed one appends to the same file); the last is of
  # the final model on every test digit of the stage's classes.
  evals = {r["step"]: r for r in read(directory / "metrics.jsonl") if "eval/top1" in r}
  final = evals[max(evals)]
  row = {"stage": stage, "classes": list(config.classes), "steps": max(evals),
         "top1": final["eval/top1"], "test_images": int(final["eval/count"]),
         "top1_by_step": [[step, evals[step]["eval/top1"]] for step in sorted(evals)],
         **localise(directory, config), "train_seconds": seconds, "settings": settings}
  stages.record(directory, row)
  return row


def _early(row: dict) -> str:
  """'0.874 (44)': the test top-1 at the first evaluation after step 0, and its step."""
  later = [(step, top1) for step, top1 in row["top1_by_step"] if 0 < step < row["steps"]]
  return f"{later[0][1]:.3f} ({later[0][0]})" if later else "–"


def table(rows: list[dict]) -> str:
  """The Markdown table: accuracy (early and final), localisation (median / mean), time."""
  lines = ["| stage | classes | starts from | trains | steps | test top-1 early (step) | "
           "test top-1 | grids | B-cos x·W(x) localisation (median / mean) | train time (s) |",
           "|" + "---|" * 10]
  for row in rows:
    start, trains = DESCRIPTIONS[row["stage"]]
    scores = row["localisation"]
    cell = f"{scores['median']:.3f} / {scores['mean']:.3f}" if scores else "– (no grid)"
    classes = f"{row['classes'][0]}–{row['classes'][-1]}"
    lines.append(f"| {row['stage']} | {classes} | {start} | {trains} | {row['steps']} | "
                 f"{_early(row)} | {row['top1']:.4f} | {row['grids']} | {cell} | "
                 f"{row['train_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  root = pathlib.Path(_ROOT.value)
  settings = _settings()
  rows = [run_stage(stage, root, settings) for stage in STAGES]
  (root / "transfer_digits.json").write_text(json.dumps(rows, indent=2))
  markdown = table(rows)
  (root / "transfer_digits.md").write_text(markdown)
  print(markdown, end="", flush=True)


if __name__ == "__main__":
  cli.run(main)
