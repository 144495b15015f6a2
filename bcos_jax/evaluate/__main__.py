"""The localisation metric for a trained or imported model, for several methods.

    # a training run (its config.json names the dataset and recipe):
    python -m bcos_jax.evaluate --workdir=/tmp/bcos_digits --grid=3 --grids=250 --smooth=1
    # an imported model (python -m bcos_jax.convert ...):
    python -m bcos_jax.evaluate --model_dir=DIR --dataset=imagenet2012 --split=validation \
        --recipe=bcos_final --grid=3 --grids=250 --smooth=15 --methods=bcos,grad_cam
    # an official v2 hub model (bcos_jax.models.pretrained: downloaded once, cached):
    python -m bcos_jax.evaluate --pretrained=resnet50 --out=DIR --dataset=imagenet2012 \
        --split=validation --recipe=bcos_final --grid=3 --grids=250 --smooth=15

Writes OUT/<setting>.npz (every score per method), .json (quartiles) and
.png (box plots, as Figs. 5 and 6), OUT being --out or WORKDIR/localisation
(MODEL_DIR/localisation); with --pretrained, --out is required.
"""

import json
import pathlib

import numpy as np
from absl import app, flags

from bcos_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (newest checkpoint).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A saved or imported model directory.")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "A v2 hub name with released weights (bcos_jax.models.pretrained: "
    "downloaded into $BCOS_JAX_CACHE once, then loaded from there); needs --out.")
_DATASET = flags.DEFINE_string("dataset", None, "tfds name (default: the run's config).")
_SPLIT = flags.DEFINE_string("split", None, "Test split (default: the run's eval_split).")
_RECIPE = flags.DEFINE_string("recipe", None, "Preprocessing recipe (default: the run's).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data directory.")
_METHODS = flags.DEFINE_list("methods", ["bcos"], "Attribution methods, of: bcos, gradient, "
                             "input_x_gradient, integrated_gradients, deeplift, "
                             "guided_backprop, grad_cam, occlusion (kernel 32, stride 32), "
                             "occ5, occ9, occ9_ti, occ13_ti, rise, lime; or the sets paper "
                             "(the CVPR paper's comparison) and all.")
_OPTIONS = flags.DEFINE_string("method_options", "{}",
                               'JSON, e.g. {"occlusion": {"kernel": 16, "stride": 8}}.')
_GRID = flags.DEFINE_integer("grid", 3, "Grid side: 2 (2×2) or 3 (3×3).")
_GRIDS = flags.DEFINE_integer("grids", 250, "Number of grids (250 or 500 in the papers).")
_SMOOTH = flags.DEFINE_integer("smooth", 15, "Box smoothing: 15 for ImageNet, 1 for CIFAR-10.")
_RESCALE = flags.DEFINE_bool("rescale", False, "Tiles at 1/grid size, so a grid has the "
                             "model's input size (B-cos v2 '_rescale').")
_CONF_THRESH = flags.DEFINE_float("conf_thresh", 0.5, "Minimum sigmoid confidence; 0 is the "
                                  "v2 '_noconfthresh' variant.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size for classifying the test set.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/localisation or "
                           "MODEL_DIR/localisation; required with --pretrained, as results do "
                           "not belong in the weights cache).")


def _run_config(workdir: str | None) -> dict:
  if workdir is None:
    return {}
  path = pathlib.Path(workdir) / "config.json"
  return json.loads(path.read_text()) if path.is_file() else {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sources = [v for v in (_WORKDIR.value, _MODEL_DIR.value, _PRETRAINED.value) if v is not None]
  if len(sources) != 1:
    raise app.UsageError("give exactly one of --workdir (a training run), --model_dir or "
                         "--pretrained")
  if _PRETRAINED.value is not None and _OUT.value is None:
    raise app.UsageError("--pretrained needs --out: the directory for the results")
  from bcos_jax import data, models  # noqa: PLC0415  (flags first, JAX later)
  from bcos_jax.evaluate import attribution, localisation

  run_config = _run_config(_WORKDIR.value)
  dataset = _DATASET.value or run_config.get("dataset")
  split = _SPLIT.value or run_config.get("eval_split")
  recipe = _RECIPE.value or run_config.get("recipe")
  if not (dataset and split and recipe):
    raise app.UsageError("--dataset, --split and --recipe are needed (a --workdir with "
                         "config.json provides them)")
  if _PRETRAINED.value is not None:
    model = models.pretrained(_PRETRAINED.value)
  else:
    model = models.load(_WORKDIR.value or _MODEL_DIR.value)
  # A run trained on some classes (config.classes) is evaluated on those, relabelled as it
  # was trained; another --dataset than the run's is taken whole.
  classes = (run_config.get("classes") or ()) if dataset == run_config.get("dataset") else ()
  source = data.open_source(dataset, split, _DATA_DIR.value or run_config.get("data_dir"),
                            classes=classes)
  transform = data.get_recipe(recipe).eval
  grid_transform = data.recipes.rescaled_eval(recipe, _GRID.value) if _RESCALE.value else transform
  setting = localisation.Setting(n_imgs=_GRID.value**2, count=_GRIDS.value,
                                  smooth=_SMOOTH.value, rescale=_RESCALE.value,
                                  conf_thresh=_CONF_THRESH.value)
  methods = attribution.methods_by_name(_METHODS.value, json.loads(_OPTIONS.value),
                                        bcos=models.info(model).bcos)
  def report(name, scores, seconds):
    q25, median, q75 = np.percentile(scores, [25, 50, 75])
    print(f"{name:22s} median {median:.3f}  q25 {q25:.3f}  q75 {q75:.3f}  ({seconds:.1f} s)",
          flush=True)

  scores = localisation.run(model, source, transform, grid_transform, methods, setting,
                             _BATCH.value, report)
  out = _OUT.value or pathlib.Path(_WORKDIR.value or _MODEL_DIR.value) / "localisation"
  stem = localisation.write_results(out, scores, setting, f"{model.config.name} {setting.name}")
  print(f"wrote {stem}.npz, .json, .png")


if __name__ == "__main__":
  cli.run(main)
