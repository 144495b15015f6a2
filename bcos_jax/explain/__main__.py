"""Explains a model's outputs on image files: colour explanations and contribution maps.

    # the top 3 classes of a training run's model (its config.json names the recipe):
    python -m bcos_jax.explain --workdir=/tmp/bcos_digits --image=A.png --image=B.jpg \
        --top_k=3 --out=fig.png
    # chosen classes of an official hub model, one PNG per image and top_classes.json:
    python -m bcos_jax.explain --pretrained=resnet50 --image=cat.jpg --classes=281,285 --out=DIR
    # an intermediate unit: a layer of `bcos_jax.explain.module_paths(model)`, a channel:
    python -m bcos_jax.explain --model_dir=DIR --image=cat.jpg --unit=layer4.1:17 --out=unit.png

Each file (JPEG, PNG, ...; any size; grey and RGBA become RGB) goes through
the evaluation transform of --recipe (`bcos_jax.explain.image_files`): by
default the run's recipe for --workdir, and `bcos_final` (resize 256, centre
crop 224: the B-cos v2 hub's ImageNet evaluation) for --model_dir and
--pretrained; give --recipe=bcos_final_long for the hub's *_long and convnext
models, --recipe=inception_v1 for v1_inception_v3.

--out=FILE.png writes one figure with a row per image; any other --out is a
directory that gets one PNG per image (named after its file) and
top_classes.json (the classes shown: index, name, logit, probability) or,
with --unit, unit.json (the unit's activations). Class names come from the
run's dataset (--workdir, where it is prepared), else "class i".
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bcos_jax import cli, data, models
from bcos_jax.errors import UserError
from bcos_jax.explain import explanation, figures, image_files

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir (newest checkpoint).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A saved or imported model directory.")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "A v2 hub name with released weights (bcos_jax.models.pretrained: "
    "downloaded into $BCOS_JAX_CACHE once, then loaded from there).")
_IMAGE = flags.DEFINE_multi_string("image", None, "An image file to explain (repeatable).")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Explain each image's k highest classes.")
_CLASSES = flags.DEFINE_list("classes", None, "Class indices to explain in every image, "
                             "instead of the top k, e.g. 281,285.")
_UNIT = flags.DEFINE_string("unit", None, "LAYER:CHANNEL, an intermediate unit to explain "
                            "instead of classes (its channel summed over positions), e.g. "
                            "layers.4:3.")
_RECIPE = flags.DEFINE_string("recipe", None, "Preprocessing recipe (default: the run's for "
                              "--workdir, else bcos_final).")
_OUT = flags.DEFINE_string("out", None, "FILE.png (one figure) or a directory (a figure per "
                           "image and a JSON summary).")


def _parse_unit(text: str) -> tuple[str, int]:
  layer, _, channel = text.rpartition(":")
  if not layer or not channel.strip().isdigit():
    raise UserError(f"--unit={text!r} must be LAYER:CHANNEL, e.g. --unit=layers.4:3")
  return layer, int(channel)


def _parse_classes(texts: list[str]) -> list[int]:
  try:
    return [int(text) for text in texts]
  except ValueError as error:
    raise UserError(f"--classes={','.join(texts)} must be class indices, e.g. "
                    "--classes=3,5") from error


def _model_dir() -> pathlib.Path | None:
  """The --workdir or --model_dir directory, checked to exist; None for --pretrained."""
  for flag in (_WORKDIR, _MODEL_DIR):
    if flag.value is not None:
      directory = pathlib.Path(flag.value)
      if not directory.is_dir():
        raise UserError(f"--{flag.name}={flag.value}: no such directory")
      return directory
  return None


def _run_config() -> dict:
  """A training run's config.json (empty for a saved or pretrained model)."""
  if _WORKDIR.value is None:
    return {}
  path = pathlib.Path(_WORKDIR.value) / "config.json"
  return json.loads(path.read_text()) if path.is_file() else {}


def _class_names(run_config: dict):
  """The run's dataset's class names (those of its classes subset), or None."""
  if _PRETRAINED.value:  # the official v2 models classify ImageNet
    return data.class_names("imagenet2012")
  if not run_config.get("dataset"):
    return None
  try:
    source = data.open_source(run_config["dataset"], run_config["eval_split"],
                              run_config.get("data_dir"))
  except data.DatasetNotPreparedError:
    return None  # names only label the figures: "class i" will do
  names, classes = source.class_names, run_config.get("classes") or ()
  return [names[c] for c in classes] if names and classes else names


def _explain_classes(model, x6: jax.Array, classes: list[int] | None, names):
  """The top --top_k classes of each image, or the --classes of every image.

  Returns:
    The explanation, each image's JSON entry and the function that draws it.
  """
  if classes is None:
    result = explanation.explain_top_k(model, x6, _TOP_K.value)
  else:
    result = explanation.explain(model, x6, jnp.tile(jnp.asarray(classes), (x6.shape[0], 1)))
    explanation.check_classes(classes, result.logits.shape[-1], "--classes")
  targets = np.asarray(result.targets)
  logits = np.take_along_axis(np.asarray(result.logits), targets, axis=1)
  entries = [{"classes": [
      {"index": int(c), "name": figures.class_name(int(c), names), "logit": float(z),
       "probability": float(jax.nn.sigmoid(z))} for c, z in zip(cs, zs, strict=True)]}
      for cs, zs in zip(targets, logits, strict=True)]
  return result, entries, functools.partial(figures.explanation_figure, class_names=names)


def _explain_unit(model, x6: jax.Array, unit: tuple[str, int]):
  """--unit: as `_explain_classes`, for the unit's explanation."""
  result = explanation.explain_unit(model, x6, *unit)
  entries = [{"activation": float(a)} for a in np.asarray(result.logits)]
  return result, entries, functools.partial(figures.unit_figure, layer=unit[0],
                                            channel=unit[1])


def _line(label: str, entry: dict) -> str:
  """What the console says about one image."""
  if "activation" in entry:
    return f"{label}: activation {entry['activation']:.4g}"
  return f"{label}: " + ", ".join(f"{c['name']} (p = {c['probability']:.3f})"
                                  for c in entry["classes"])


def _figure_names(paths: list[str]) -> list[str]:
  names = [f"{pathlib.Path(p).stem}.png" for p in paths]
  if len(set(names)) != len(names):
    raise UserError(f"--image files {paths} do not have distinct names, so their figures in "
                    "the --out directory would overwrite each other: rename them, or write "
                    "one figure with --out=FILE.png")
  return names


def _check_flags(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if sum(v is not None for v in (_WORKDIR.value, _MODEL_DIR.value, _PRETRAINED.value)) != 1:
    raise app.UsageError("give exactly one of --workdir (a training run), --model_dir or "
                         "--pretrained")
  if not _IMAGE.value or _OUT.value is None:
    raise app.UsageError("give at least one --image=PATH and --out=FILE.png or --out=DIR")
  if _CLASSES.value and _UNIT.value:
    raise app.UsageError("--classes and --unit both choose what to explain: give one")


def main(argv):
  _check_flags(argv)
  unit = _parse_unit(_UNIT.value) if _UNIT.value else None
  classes = _parse_classes(_CLASSES.value) if _CLASSES.value else None
  out = pathlib.Path(_OUT.value)
  one_figure = out.suffix.lower() == ".png"
  figure_names = None if one_figure else _figure_names(_IMAGE.value)
  if not one_figure and out.exists() and not out.is_dir():
    raise UserError(f"--out={out} is a file: give a directory, or a FILE.png for one figure")
  directory = _model_dir()
  run_config = _run_config()
  recipe = _RECIPE.value or run_config.get("recipe") or image_files.DEFAULT_RECIPE
  images = image_files.load_images(_IMAGE.value, recipe)  # bad files fail before the model loads
  model = models.pretrained(_PRETRAINED.value) if directory is None else models.load(directory)
  x6 = models.input_transform(model)(jnp.asarray(images))
  if unit is None:
    result, entries, draw = _explain_classes(model, x6, classes, _class_names(run_config))
    summary = {}
  else:
    result, entries, draw = _explain_unit(model, x6, unit)
    summary = {"layer": unit[0], "channel": unit[1]}
  labels = [pathlib.Path(p).name for p in _IMAGE.value]
  entries = [{"image": str(pathlib.Path(p).absolute()), **entry}
             for p, entry in zip(_IMAGE.value, entries, strict=True)]
  print("\n".join(_line(label, entry) for label, entry in zip(labels, entries, strict=True)))
  result, x6 = jax.device_get((result, x6))  # sliced per figure below: on the host

  def figure_of(part: slice):
    rows = jax.tree.map(lambda leaf: leaf[part], result)
    return draw(images[part], x6[part], rows, row_labels=labels[part])

  if one_figure:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure_of(slice(None)).savefig(out, dpi=100)
    print(f"wrote {out}")
    return 0
  out.mkdir(parents=True, exist_ok=True)
  for i, (entry, name) in enumerate(zip(entries, figure_names, strict=True)):
    figure_of(slice(i, i + 1)).savefig(out / name, dpi=100)
    entry["figure"] = name
  summary_file = out / ("unit.json" if unit is not None else "top_classes.json")
  summary_file.write_text(json.dumps(
      {"model": model.config.name, "recipe": recipe, **summary, "images": entries}, indent=2))
  print(f"wrote {len(entries)} figures and {summary_file.name} to {out}")
  return 0


if __name__ == "__main__":
  cli.run(main)
