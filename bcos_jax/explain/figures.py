"""Figures of explanations: one row per image, its input and then explanation pairs.

Each pair is the colour explanation (`to_rgba`) and the contribution map
(`plot_contribution_map`) of one explained output: a class, the difference
of two classes, or an intermediate unit. Figures are `matplotlib.figure.Figure`s
of their own (no pyplot state): show one in a notebook by ending a cell with
it, save it with `figure.savefig(path)`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.explain.contrast import Contrast
from bcos_jax.explain.explanation import Explanation, explain_top_k
from bcos_jax.explain.units import TopActivating
from bcos_jax.explain.visualise import plot_contribution_map, to_rgba

_CELL_INCHES = 1.7


def default_smooth(image_size: int) -> int:
  """The opacity smoothing: the official 15 pixels at ImageNet sizes, 3 for small images."""
  return 3 if image_size <= 64 else 15


def class_name(index: int, class_names: Sequence[str] | None) -> str:
  """The dataset's name of class `index`, or "class <index>" without one."""
  if class_names is not None and 0 <= index < len(class_names):
    return str(class_names[index])
  return f"class {index}"


def _hide_ticks(ax) -> None:
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_visible(False)


def _grid(images_rgb, x6, weights, contributions, titles: Sequence[Sequence[str]],
          row_labels: Sequence[str] | None, smooth: int | None, alpha_percentile: float) -> Figure:
  """The figure: for image n, its input, then per explained output t the colour explanation
  (titled titles[n][t]) and the contribution map. weights (N, T, H, W, 6).

  Arrays are moved to the host first: slicing device arrays op by op would
  compile each slice.
  """
  images_rgb, x6, weights, contributions = jax.device_get((images_rgb, x6, weights,
                                                           contributions))
  count, outputs = contributions.shape[:2]
  smooth = default_smooth(images_rgb.shape[1]) if smooth is None else smooth
  x6_each = np.repeat(x6, outputs, axis=0)
  rgba = to_rgba(x6_each, np.reshape(weights, x6_each.shape), smooth, alpha_percentile)
  rgba = np.asarray(rgba).reshape(count, outputs, *rgba.shape[1:])
  fig = Figure(figsize=(_CELL_INCHES * (1 + 2 * outputs), _CELL_INCHES * count + 0.4))
  axes = fig.subplots(count, 1 + 2 * outputs, squeeze=False)
  for n in range(count):
    axes[n, 0].imshow(images_rgb[n])
    _hide_ticks(axes[n, 0])  # kept as an axis: its label names the row
    if row_labels is not None:
      axes[n, 0].set_ylabel(row_labels[n], fontsize=7)
    for t in range(outputs):
      explained, mapped = axes[n, 1 + 2 * t], axes[n, 2 + 2 * t]
      explained.imshow(rgba[n, t])
      explained.set_title(titles[n][t], fontsize=7)
      _hide_ticks(explained)
      plot_contribution_map(contributions[n, t], ax=mapped)
      if n == 0:
        mapped.set_title("contributions x·W(x)", fontsize=7)
  axes[0, 0].set_title("input", fontsize=7)
  fig.tight_layout()
  return fig


def _check_images(images_rgb, x6) -> np.ndarray:
  images_rgb = np.asarray(images_rgb)
  if images_rgb.dtype != np.uint8 or images_rgb.shape != (*x6.shape[:3], 3):
    raise UserError(f"images_rgb must be the uint8 (N, H, W, 3) images of the explained input "
                    f"{tuple(x6.shape)}, got {images_rgb.dtype} {images_rgb.shape}")
  return images_rgb


def explanation_figure(images_rgb, x6: jax.Array, explanation: Explanation,
                       class_names: Sequence[str] | None = None, *,
                       row_labels: Sequence[str] | None = None, smooth: int | None = None,
                       alpha_percentile: float = 99.5) -> Figure:
  """Draws the explanations of classes: per image, its input and each explained class.

  Args:
    images_rgb: uint8 (N, H, W, 3) the explained images.
    x6: (N, H, W, 6) them as the model's input.
    explanation: from `explain` or `explain_top_k`, with targets (N,) or (N, T).
    class_names: the dataset's class names (e.g. `source.class_names`); None: "class i".
    row_labels: N labels at the rows' left (e.g. the file names).
    smooth: the opacity smoothing of `to_rgba` (default: `default_smooth` of the size).
    alpha_percentile: of `to_rgba`.

  Returns:
    A matplotlib Figure; each colour explanation is titled with its class and
    probability (the sigmoid of the logit: B-cos models are trained with BCE).
  """
  images_rgb = _check_images(images_rgb, x6)
  explanation = jax.device_get(explanation)
  targets, weights, contributions = (explanation.targets, explanation.weights,
                                     explanation.contributions)
  if targets.ndim == 1:  # one class per image: the T axis of one
    targets, weights, contributions = targets[:, None], weights[:, None], contributions[:, None]
  probabilities = np.asarray(jax.nn.sigmoid(np.take_along_axis(explanation.logits, targets, 1)))
  titles = [[f"{class_name(int(c), class_names)}\np = {p:.2f}" for c, p in zip(cs, ps, strict=True)]
            for cs, ps in zip(targets, probabilities, strict=True)]
  return _grid(images_rgb, x6, weights, contributions, titles, row_labels, smooth,
               alpha_percentile)


def figure(model: nnx.Module, images_rgb, top_k: int = 3,
           class_names: Sequence[str] | None = None, *,
           row_labels: Sequence[str] | None = None, smooth: int | None = None,
           alpha_percentile: float = 99.5) -> Figure:
  """Explains each image's top-k classes and draws them (`explanation_figure`).

  Args:
    model: a B-cos model.
    images_rgb: uint8 (N, H, W, 3) at the model's input size (for files of any
      size: `load_images`).
    top_k: classes per image, highest first.
    class_names, row_labels, smooth, alpha_percentile: as `explanation_figure`.

  Returns:
    A matplotlib Figure. The explanation it draws is `explain_top_k(model,
    models.input_transform(model)(images_rgb), top_k)`.
  """
  x6 = models.input_transform(model)(jnp.asarray(images_rgb))
  return explanation_figure(images_rgb, x6, explain_top_k(model, x6, top_k), class_names,
                            row_labels=row_labels, smooth=smooth,
                            alpha_percentile=alpha_percentile)


def contrast_figure(images_rgb, x6: jax.Array, contrast: Contrast,
                    class_names: Sequence[str] | None = None, *,
                    row_labels: Sequence[str] | None = None, smooth: int | None = None,
                    alpha_percentile: float = 99.5) -> Figure:
  """Draws `contrast` results: per image, why class a rather than class b.

  Each colour explanation is titled "a − b" with the difference of their logits.
  """
  images_rgb = _check_images(images_rgb, x6)
  logits = np.asarray(contrast.logits)
  titles = [[f"{class_name(int(a), class_names)} − {class_name(int(b), class_names)}\n"
             f"Δ logit = {row[a] - row[b]:.2f}"]
            for a, b, row in zip(np.asarray(contrast.class_a), np.asarray(contrast.class_b),
                                 logits, strict=True)]
  return _grid(images_rgb, x6, contrast.weights[:, None], contrast.contributions[:, None],
               titles, row_labels, smooth, alpha_percentile)


def unit_figure(images_rgb, x6: jax.Array, unit: Explanation, layer: str, channel: int, *,
                row_labels: Sequence[str] | None = None, smooth: int | None = None,
                alpha_percentile: float = 99.5) -> Figure:
  """Draws `explain_unit` results: per image, what the unit `layer:channel` responds to."""
  images_rgb = _check_images(images_rgb, x6)
  titles = [[f"{layer}:{channel}\nactivation {float(a):.3g}"] for a in np.asarray(unit.logits)]
  return _grid(images_rgb, x6, unit.weights[:, None], unit.contributions[:, None], titles,
               row_labels, smooth, alpha_percentile)


def top_activating_figure(result: TopActivating, *, smooth: int | None = None,
                          alpha_percentile: float = 99.5) -> Figure:
  """Draws `top_activating` results: one row per record, highest activation first."""
  return unit_figure(result.images, result.x6, result.explanation, result.layer, result.channel,
                     row_labels=[f"record {int(i)}" for i in result.indices], smooth=smooth,
                     alpha_percentile=alpha_percentile)
