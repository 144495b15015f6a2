"""The B ablation of the B-cos paper (Fig. 5) at small scale, on the embedded digits data.

    python launch/b_ablation.py --root=/tmp/bcos_b_ablation [--bs=1,1.25,1.5,1.75,2,2.25,2.5]

For every B it trains `configs/digits.py:b=B` into ROOT/b<B> (a finished or
interrupted run resumes), then runs the localisation metric with the model's
own explanations (2×2 grids, smoothing 1, as for CIFAR-10) and writes
ROOT/b_ablation.json and a Markdown table: accuracy and localisation side by
side. On 2 CPU cores each B takes about 4 minutes.
"""

import importlib.util
import json
import pathlib

import numpy as np
from absl import flags

from bcos_jax import cli

_ROOT = flags.DEFINE_string("root", "/tmp/bcos_b_ablation", "One workdir per B goes here.")
_BS = flags.DEFINE_list("bs", ["1", "1.25", "1.5", "1.75", "2", "2.25", "2.5"], "The B values.")
_GRIDS = flags.DEFINE_integer("grids", 50, "2×2 grids per model.")
_METHODS = flags.DEFINE_list("methods", ["bcos"], "Attribution methods to score, or a set: "
                             "paper (the CVPR paper's comparison), all.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")

CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "digits.py"


def _digits_config(b: str):
  spec = importlib.util.spec_from_file_location("digits_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"b={b}")
  config.data_dir = _DATA_DIR.value
  return config


def main(argv):
  del argv
  from bcos_jax import data, models  # noqa: PLC0415  (flags first, JAX later)
  from bcos_jax.evaluate import attribution, localisation
  from bcos_jax.train import train_and_evaluate
  from bcos_jax.train.metric_writer import read

  root = pathlib.Path(_ROOT.value)
  # A small test set: a model with few confident images gets fewer grids.
  setting = localisation.Setting(n_imgs=4, count=_GRIDS.value, smooth=1, allow_fewer=True)
  rows = []
  names = []
  for b in _BS.value:
    config = _digits_config(b)
    workdir = root / f"b{float(b):g}"
    train_and_evaluate(config, workdir)  # a finished run only resumes to its end
    evals = [r for r in read(workdir / "metrics.jsonl") if "eval/top1" in r]
    recipe = data.get_recipe(config.recipe)
    source = data.open_source(config.dataset, config.eval_split, config.data_dir)
    methods = attribution.methods_by_name(_METHODS.value)  # sets such as 'paper' expanded
    names = list(methods)
    scores = localisation.run(models.load(workdir), source, recipe.eval, recipe.eval, methods,
                              setting)
    localisation.write_results(workdir / "localisation", scores, setting, f"B={b}")
    row = {"b": float(b), "top1": evals[-1]["eval/top1"],
           "grids": int(len(next(iter(scores.values()))) // setting.n_imgs)}
    row |= {f"{name}_median": float(np.median(v)) for name, v in scores.items()}
    row |= {f"{name}_mean": float(np.mean(v)) for name, v in scores.items()}
    rows.append(row)
    print(row, flush=True)
  (root / "b_ablation.json").write_text(json.dumps(rows, indent=2))
  labels = {**attribution.PAPER_LABELS, "bcos": "B-cos x·W(x)"}
  header = "| B | test top-1 | grids | " + " | ".join(labels.get(m, m) for m in names) + " |"
  lines = ["Localisation scores, median / mean:", "", header, "|" + "---|" * (3 + len(names))]
  for row in rows:
    cells = " | ".join(f"{row[m + '_median']:.3f} / {row[m + '_mean']:.3f}" for m in names)
    lines.append(f"| {row['b']:g} | {row['top1']:.4f} | {row['grids']} | {cells} |")
  (root / "b_ablation.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  cli.run(main)
