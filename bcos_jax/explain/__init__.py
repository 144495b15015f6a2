"""Explanations of B-cos models: W(x) via one jax.vjp, and their visualisation.

    images = explain.load_images(["cat.jpg"], "bcos_final")   # uint8, the model's input size
    explain.figure(model, images, top_k=3)                    # a matplotlib Figure

`explain`, `explain_top_k`, `explain_unit` and `contrast` compute explanations;
`top_activating` finds a unit's most exciting records in a data source; the
`*_figure` functions draw them. `python -m bcos_jax.explain` explains image files.
"""

from bcos_jax.explain.contrast import Contrast, contrast
from bcos_jax.explain.explanation import (
    Explanation,
    check_explainable,
    explain,
    explain_top_k,
    explain_unit,
    mean_offset,
)
from bcos_jax.explain.figures import (
    contrast_figure,
    explanation_figure,
    figure,
    top_activating_figure,
    unit_figure,
)
from bcos_jax.explain.image_files import load_image, load_images
from bcos_jax.explain.probe import module_paths
from bcos_jax.explain.units import TopActivating, top_activating
from bcos_jax.explain.visualise import plot_contribution_map, save_explanation_grid, to_rgba

__all__ = ["Contrast", "Explanation", "TopActivating", "check_explainable", "contrast",
           "contrast_figure", "explain", "explain_top_k", "explain_unit", "explanation_figure",
           "figure", "load_image", "load_images", "mean_offset", "module_paths",
           "plot_contribution_map", "save_explanation_grid", "to_rgba", "top_activating",
           "top_activating_figure", "unit_figure"]
