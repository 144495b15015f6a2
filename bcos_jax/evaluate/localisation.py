"""The localisation metric ("grid pointing game", B-cos v1 Sec. 4 and C.2.1).

Confidently and correctly classified test images of n different classes are
tiled into an s×s grid (n = s²); an attribution method explains each of the
n classes on the grid, and the score of one explanation is the fraction of
its positive (smoothed) attribution that falls in the tile of the explained
class: 1 is perfect, 1/n is what a uniform map scores.

The functions reproduce the official code exactly, quirks included (the
image order, NumPy's legacy seed-42 class sampling, the column-major tile
order, the grid builder skipping one index after each grid), so scores are
comparable with the papers' figures.

`run` does the whole analysis for a model and a test split: it classifies
the split (`accuracy.classify`, sharded), orders the confident images into
grids, explains every tile's class with each method and scores it;
`write_results` stores the scores (npz), their quartiles (JSON) and a box
plot in the style of the paper's Figs. 5 and 6.
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

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.evaluate import accuracy, attribution
from bcos_jax.nn.pooling import box_smooth


def grid_side(n_imgs: int) -> int:
  side = int(round(n_imgs**0.5))
  if side * side != n_imgs or side < 2:
    raise UserError(f"n_imgs must be a square number >= 4 (4 for 2×2, 9 for 3×3), got {n_imgs}")
  return side


def _confident(logit: float, conf_thresh: float) -> bool:
  # The official code thresholds a float32 sigmoid of the logit.
  return float(1 / (1 + np.exp(-np.float32(logit), dtype=np.float32))) > conf_thresh


def sorted_confidences(labels: np.ndarray, logits: np.ndarray, correct: np.ndarray,
                       num_classes: int | None = None) -> dict[int, list[tuple[int, float]]]:
  """Per class, the correctly classified images as (index, top logit), most confident first."""
  labels, logits, correct = np.asarray(labels), np.asarray(logits), np.asarray(correct, bool)
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  confidences: dict[int, list[tuple[int, float]]] = {c: [] for c in range(num_classes)}
  for index in np.flatnonzero(correct):
    confidences[int(labels[index])].append((int(index), float(logits[index])))
  # A stable sort: equal logits keep the dataset order, as in the official code.
  return {c: sorted(v, key=lambda item: item[1], reverse=True) for c, v in confidences.items()}


def sample_grid_indices(labels: np.ndarray, logits: np.ndarray, correct: np.ndarray, n_imgs: int,
                        conf_thresh: float = 0.5, seed: int = 42,
                        num_classes: int | None = None) -> np.ndarray:
  """The image order of the grids: blocks of n_imgs images of distinct classes.

  While more than n_imgs classes still have an unused image with
  sigmoid(logit) > conf_thresh, n_imgs of those classes are drawn with NumPy's
  legacy generator (`np.random.seed(seed)`; `np.random.choice` without
  replacement) and each contributes its next most confident image.

  Args:
    labels: (N,) true classes of the test images.
    logits: (N,) each image's top logit.
    correct: (N,) whether the image was classified correctly.
    n_imgs: images per grid.
    conf_thresh: the minimum sigmoid confidence (0 keeps every correct image).
    seed: the legacy NumPy seed (42 in the official code).
    num_classes: classes of the dataset (default: the largest label + 1).

  Returns:
    (M,) image indices, M a multiple of n_imgs.
  """
  confidences = sorted_confidences(labels, logits, correct, num_classes)
  classes = np.array(sorted(confidences))
  position = dict.fromkeys(confidences, 0)

  def still_confident(c: int) -> bool:
    if position[c] >= len(confidences[c]):
      return False
    return _confident(confidences[c][position[c]][1], conf_thresh)

  available = np.array([still_confident(c) for c in classes])
  rng = np.random.RandomState(seed)  # the legacy stream of np.random.seed(seed)
  indices = []
  while available.sum() > n_imgs:
    for c in rng.choice(classes[available], size=n_imgs, replace=False):
      indices.append(confidences[c][position[c]][0])
      position[c] += 1
      available[c] = still_confident(c)
  return np.array(indices, np.int64)


def tile(images: np.ndarray) -> np.ndarray:
  """n_imgs (n, h, w, C) images -> one (s·h, s·w, C) grid in the official tile
  order: image k = a·s + b goes to row b, column a (column-major)."""
  side = grid_side(len(images))
  n, h, w, c = images.shape
  blocks = np.asarray(images).reshape(side, side, h, w, c)  # (a, b, h, w, C)
  return blocks.transpose(1, 2, 0, 3, 4).reshape(side * h, side * w, c)


def make_grid(images: Sequence, labels: Sequence[int], indices: np.ndarray, n_imgs: int,
              offset: int) -> tuple[np.ndarray, np.ndarray, int]:
  """One grid from `indices[offset:]`: the next n_imgs images of distinct classes.

  Returns:
    (grid (s·h, s·w, C), targets (n_imgs,), the next offset). As in the
    official code, the next offset is one past the index after the last
    image used, so one index is skipped after each grid.
  """
  chosen, targets, i = [], [], 0
  while len(chosen) < n_imgs:
    if offset + i >= len(indices):
      raise UserError(f"the grid order has only {len(indices)} images, too few for another "
                       f"grid of {n_imgs}; ask for fewer grids (a smaller model test set gives "
                       "fewer confident images per class)")
    index = int(indices[offset + i])
    i += 1
    if int(labels[index]) in targets:  # never happens with sample_grid_indices' blocks
      continue
    chosen.append(np.asarray(images[index]))
    targets.append(int(labels[index]))
  return tile(np.stack(chosen)), np.array(targets, np.int64), offset + i + 1


def make_grids(images: Sequence, labels: Sequence[int], indices: np.ndarray, n_imgs: int,
               count: int, allow_fewer: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """`count` grids: images (N, h, w, C) (any indexable) -> (count, s·h, s·w, C), (count, n_imgs).

  Args:
    allow_fewer: stop early, with the grids there are, when `indices` runs
      out (a small test set); by default that is an error.
  """
  grids, targets, offset = [], [], 0
  for _ in range(count):
    try:
      grid, grid_targets, offset = make_grid(images, labels, indices, n_imgs, offset)
    except ValueError:
      if allow_fewer and grids:
        break
      raise
    grids.append(grid)
    targets.append(grid_targets)
  return np.stack(grids), np.stack(targets)


@functools.partial(jax.jit, static_argnames=("n_imgs", "smooth"))
def score(attributions: jax.Array, n_imgs: int, smooth: int = 0) -> jax.Array:
  """The localisation score of each of a grid's n_imgs explanations.

  Args:
    attributions: (n_imgs, sH, sW) or (n_imgs, sH, sW, C) (summed over C);
      row k explains the class of tile k.
    n_imgs: images in the grid.
    smooth: box-smoothing kernel (0 or 1: none).

  Returns:
    (n_imgs,) the fraction of positive attribution inside the right tile.
  """
  side = grid_side(n_imgs)
  maps = jnp.asarray(attributions, jnp.float32)
  if maps.ndim == 4:
    maps = maps.sum(axis=-1)
  if maps.ndim != 3 or maps.shape[0] != n_imgs:
    raise UserError(f"attributions must be (n_imgs={n_imgs}, sH, sW[, C]), got "
                     f"{attributions.shape}")
  tile_h, tile_w = maps.shape[1] // side, maps.shape[2] // side
  if smooth > 1:
    maps = box_smooth(maps, smooth)
  maps = jnp.maximum(maps, 0)  # only positive evidence counts
  maps = maps[:, :side * tile_h, :side * tile_w]
  tiles = maps.reshape(n_imgs, side, tile_h, side, tile_w).sum(axis=(2, 4))  # (n, row, col)
  tiles = tiles.transpose(0, 2, 1).reshape(n_imgs, -1)  # tile index k = col·s + row
  total = tiles.sum(axis=1, keepdims=True)
  fractions = jnp.where(total * tiles > 0, tiles / jnp.where(total > 0, total, 1), 0)
  return fractions[jnp.arange(n_imgs), jnp.arange(n_imgs)]


Attribute = Callable[[jax.Array, jax.Array], jax.Array]


def grid_scores(attribute: Attribute, grids: Sequence[np.ndarray] | np.ndarray,
                targets: np.ndarray, smooth: int,
                encode: Callable[[jax.Array], jax.Array] | None = None) -> np.ndarray:
  """Scores of every explanation on every grid.

  Args:
    attribute: (x (1, sH, sW, C), targets (1, n_imgs)) -> (1, n_imgs, sH, sW, C').
    grids: the grids, each (sH, sW, C).
    targets: (count, n_imgs).
    smooth: the box-smoothing kernel.
    encode: applied to each grid (1, sH, sW, 3) before `attribute`, e.g. the
      model's `models.input_transform` on uint8 grids; one grid at a time, so
      the encoded grids never all sit in memory.

  Returns:
    (count · n_imgs,) scores, grid by grid.
  """
  n_imgs = targets.shape[1]
  scores = []
  for grid, grid_targets in zip(grids, targets, strict=True):
    x = jnp.asarray(grid)[None]
    x = encode(x) if encode is not None else x
    maps = attribute(x, jnp.asarray(grid_targets)[None])[0]
    scores.append(score(maps, n_imgs=n_imgs, smooth=smooth))
  return np.asarray(jnp.concatenate(scores))


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
    side = grid_side(self.n_imgs)
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


def build_grids(model: nnx.Module, source, transform, grid_transform, setting: Setting,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """The grids of an analysis: (count, s·h, s·w, 3) uint8 and their targets (count, n_imgs).

  Classifies `source` with `transform` (`accuracy.classify`, sharded) and tiles the
  confident, correct images (`sample_grid_indices`) through `grid_transform`.
  """
  results = accuracy.classify(model, source, transform, batch_size)
  logging.info("test accuracy %.4f on %d images", results.correct.mean(), len(results.label))
  order = sample_grid_indices(results.label, results.top_logit, results.correct,
                              setting.n_imgs, setting.conf_thresh,
                              num_classes=source.num_classes)
  return make_grids(_TransformedImages(source, grid_transform), results.label, order,
                    setting.n_imgs, setting.count, setting.allow_fewer)


def run(model: nnx.Module, source, transform, grid_transform, methods: dict[str, Callable],
        setting: Setting, batch_size: int = 64,
        report: Callable[[str, np.ndarray, float], None] | None = None) -> dict[str, np.ndarray]:
  """Localisation scores of every method on the same grids.

  Args:
    model: the classifier (built by `bcos_jax.models.create` or loaded).
    source: the test split (`bcos_jax.data.Source`).
    transform: the evaluation transform that confidences are computed with.
    grid_transform: the transform of the tiles (the same, or a rescaled one).
    methods: name -> attribution method (`bcos_jax.evaluate.attribution`).
    setting: the grids.
    batch_size: for classifying the test set (global, over all devices).
    report: called with (method name, its scores, seconds) as each method finishes.

  Returns:
    name -> (count · n_imgs,) scores.
  """
  grids, targets = build_grids(model, source, transform, grid_transform, setting, batch_size)
  encode = jax.jit(models.input_transform(model))
  scores = {}
  for name, method in methods.items():
    start = time.perf_counter()
    scores[name] = grid_scores(functools.partial(method, model), grids, targets,
                               setting.smooth, encode)
    seconds = time.perf_counter() - start
    logging.info("%s: median %.3f over %d explanations (%.1f s)", name,
                 np.median(scores[name]), scores[name].size, seconds)
    if report:
      report(name, scores[name], seconds)
  return scores


def maps_figure(model: nnx.Module, grid: np.ndarray, targets: np.ndarray,
                methods: dict[str, Callable], smooth: int = 0,
                class_names: Sequence[str] | None = None,
                labels: dict[str, str] | None = None):
  """Every method's attribution maps on one grid, each titled with its score.

  Row i explains `targets[i]` (whose image sits in tile i): the grid, then one
  column per method with its map summed over channels (red positive, blue
  negative), and the score the metric gives it (`score`, with `smooth`).

  Args:
    model: the classifier.
    grid: one (s·h, s·w, 3) uint8 grid (`build_grids`).
    targets: its (n_imgs,) classes.
    methods: name -> attribution method, as for `run`.
    smooth: the box-smoothing kernel of the scores.
    class_names: label names for the row titles.
    labels: method titles (default: `attribution.PAPER_LABELS`).

  Returns:
    A matplotlib Figure (not attached to pyplot).
  """
  from matplotlib.figure import Figure  # noqa: PLC0415  (only plotting needs it)

  from bcos_jax.explain import visualise  # noqa: PLC0415  (explain imports evaluate)

  labels = {**attribution.PAPER_LABELS, **(labels or {})}
  targets = np.asarray(targets)
  x = models.input_transform(model)(jnp.asarray(grid)[None])
  maps = {name: np.asarray(method(model, x, jnp.asarray(targets)[None])[0])
          for name, method in methods.items()}  # each (n_imgs, H, W, C')
  scores = {name: np.asarray(score(jnp.asarray(m), n_imgs=len(targets), smooth=smooth))
            for name, m in maps.items()}
  fig = Figure(figsize=(1.6 * (len(methods) + 1), 1.6 * len(targets)))
  axes = fig.subplots(len(targets), len(methods) + 1, squeeze=False)
  for row, target in enumerate(targets):
    axes[row, 0].imshow(grid)
    axes[row, 0].set_axis_off()
    name = class_names[target] if class_names else f"class {target}"
    axes[row, 0].set_title(f"explain {name}", fontsize="small")
    for col, (method, method_maps) in enumerate(maps.items(), start=1):
      visualise.plot_contribution_map(method_maps[row].sum(-1), ax=axes[row, col])
      axes[row, col].set_title(f"{labels.get(method, method)} {scores[method][row]:.2f}",
                               fontsize="small")
  fig.tight_layout()
  return fig


def quartiles(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
  return {name: dict(zip(("q25", "median", "q75", "max"),
                         map(float, np.percentile(values, [25, 50, 75, 100])), strict=True)) |
          {"mean": float(values.mean())} for name, values in scores.items()}


def box_plot(path: str | pathlib.Path, scores: dict[str, np.ndarray], n_imgs: int,
             title: str = "", labels: dict[str, str] | None = None) -> None:
  """Box plots of the scores per method, with the uniform and oracle levels; the methods
  labelled as the papers do (`attribution.PAPER_LABELS`) unless `labels` says otherwise."""
  labels = {**attribution.PAPER_LABELS, **(labels or {})}
  # A Figure of its own, not pyplot's: no global backend or state is touched.
  from matplotlib.figure import Figure  # noqa: PLC0415  (only plotting needs it)

  fig = Figure(figsize=(1.2 * len(scores) + 1.5, 3.5))
  ax = fig.subplots()
  ax.boxplot(list(scores.values()), showfliers=False, widths=0.6,
             medianprops={"color": "black"})
  ax.set_xticks(range(1, len(scores) + 1), [labels.get(name, name) for name in scores],
                rotation=30, ha="right")
  ax.axhline(1 / n_imgs, color="gray", linestyle="--", linewidth=1, label=f"uniform (1/{n_imgs})")
  ax.axhline(1.0, color="green", linestyle=":", linewidth=1, label="oracle")
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("localisation")
  ax.set_title(title)
  ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # beside the boxes
  fig.tight_layout()
  fig.savefig(path, dpi=150)


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
