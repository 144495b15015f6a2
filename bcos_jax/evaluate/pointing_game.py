"""The localisation metric on a model's test set, for any attribution methods.

`run` classifies the test set, orders confident images into grids
(`localisation.sample_grid_indices` / `make_grids`), explains every tile's
class with each method and scores it; `write_results` stores the scores
(npz), their quartiles (JSON) and a box plot in the style of the paper's
Figs. 5 and 6, with the uniform (1/n) and oracle (1) reference lines.
"""

import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from bcos_jax import data
from bcos_jax.evaluate import attribution, localisation
from bcos_jax.explain.explanation import eval_view


@dataclasses.dataclass(frozen=True)
class Setting:
  """One analysis: grids of n_imgs images, how many, smoothing, rescale, threshold."""
  n_imgs: int = 9
  count: int = 250
  smooth: int = 15
  rescale: bool = False
  conf_thresh: float = 0.5
  allow_fewer: bool = False  # fewer grids than `count` when the test set runs out

  @property
  def name(self) -> str:
    side = localisation.grid_side(self.n_imgs)
    return (f"{self.count}_{side}x{side}{'_rescale' if self.rescale else ''}"
            f"{'' if self.conf_thresh else '_noconfthresh'}_smooth{self.smooth}")


class _TransformedImages(Sequence):
  """source[i] through an evaluation transform, read on demand (ImageNet does not fit in memory)."""

  def __init__(self, source, transform):
    self.source, self.transform = source, transform

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.transform(self.source[index])["image"]


@functools.partial(jax.jit, static_argnums=0)
def _top_logits(graphdef, state, images_uint8):
  logits = nnx.merge(graphdef, state)(data.to_model_input(images_uint8))
  return logits.max(axis=-1), logits.argmax(axis=-1)


def classify(model: nnx.Module, source, transform, batch_size: int = 64
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(labels, top logits, correct) for every record of `source`."""
  graphdef, state = nnx.split(eval_view(model))
  labels, tops, correct = [], [], []
  for batch in data.eval_dataset(source, transform, global_batch_size=batch_size):
    top, predicted = jax.device_get(_top_logits(graphdef, state, batch["image"]))
    keep = batch["mask"]
    labels.append(batch["label"][keep])
    tops.append(top[keep])
    correct.append((predicted == batch["label"])[keep])
  return np.concatenate(labels), np.concatenate(tops), np.concatenate(correct)


def run(model: nnx.Module, source, transform, grid_transform, methods: dict[str, Callable],
        setting: Setting, batch_size: int = 64,
        report: Callable[[str, np.ndarray, float], None] | None = None) -> dict[str, np.ndarray]:
  """Localisation scores of every method on the same grids.

  Args:
    model: the classifier.
    source: the test split (`bcos_jax.data.Source`).
    transform: the evaluation transform that confidences are computed with.
    grid_transform: the transform of the tiles (the same, or a rescaled one).
    methods: name -> attribution method (`bcos_jax.evaluate.attribution`).
    setting: the grids.
    batch_size: for classifying the test set.
    report: called with (method name, its scores, seconds) as each method finishes.

  Returns:
    name -> (count · n_imgs,) scores.
  """
  labels, tops, correct = classify(model, source, transform, batch_size)
  logging.info("test accuracy %.4f on %d images", correct.mean(), len(labels))
  order = localisation.sample_grid_indices(labels, tops, correct, setting.n_imgs,
                                           setting.conf_thresh, num_classes=source.num_classes)
  grids, targets = localisation.make_grids(_TransformedImages(source, grid_transform), labels,
                                           order, setting.n_imgs, setting.count,
                                           setting.allow_fewer)
  grids_x6 = data.to_model_input(jnp.asarray(grids))
  scores = {}
  for name, method in methods.items():
    start = time.perf_counter()
    scores[name] = localisation.grid_scores(functools.partial(method, model), grids_x6, targets,
                                            setting.smooth)
    seconds = time.perf_counter() - start
    logging.info("%s: median %.3f over %d explanations (%.1f s)", name,
                 np.median(scores[name]), scores[name].size, seconds)
    if report:
      report(name, scores[name], seconds)
  return scores


def quartiles(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
  return {name: dict(zip(("q25", "median", "q75", "max"),
                         map(float, np.percentile(values, [25, 50, 75, 100])), strict=True)) |
          {"mean": float(values.mean())} for name, values in scores.items()}


def box_plot(path: str | pathlib.Path, scores: dict[str, np.ndarray], n_imgs: int,
             title: str = "") -> None:
  """Box plots of the scores per method, with the uniform and oracle levels."""
  import matplotlib  # noqa: PLC0415  (only plotting needs it)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, ax = plt.subplots(figsize=(1.2 * len(scores) + 1.5, 3.5))
  ax.boxplot(list(scores.values()), showfliers=False, widths=0.6,
             medianprops={"color": "black"})
  ax.set_xticks(range(1, len(scores) + 1), list(scores), rotation=30, ha="right")
  ax.axhline(1 / n_imgs, color="gray", linestyle="--", linewidth=1, label=f"uniform (1/{n_imgs})")
  ax.axhline(1.0, color="green", linestyle=":", linewidth=1, label="oracle")
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("localisation")
  ax.set_title(title)
  ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # beside the boxes
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)


def write_results(out_dir: str | pathlib.Path, scores: dict[str, np.ndarray], setting: Setting,
                  title: str = "") -> pathlib.Path:
  """OUT/<setting>.npz (all scores), .json (quartiles), .png (box plot)."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = out_dir / setting.name
  np.savez(stem.with_suffix(".npz"), **scores)
  summary = {"setting": dataclasses.asdict(setting), "scores": quartiles(scores)}
  stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
  box_plot(stem.with_suffix(".png"), scores, setting.n_imgs, title or setting.name)
  return stem


def methods_by_name(names: Sequence[str], options: dict[str, dict] | None = None
                    ) -> dict[str, Callable]:
  """name -> method with its options bound (e.g. {'occlusion': {'window': 4}}); the
  name 'all' stands for every method."""
  options = options or {}
  if "all" in names:
    names = list(attribution.METHODS)
  return {name: functools.partial(attribution.get_method(name), **options.get(name, {}))
          for name in names}
