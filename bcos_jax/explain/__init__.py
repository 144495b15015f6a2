"""Explanations of B-cos models: W(x) via one jax.vjp, and their visualisation."""

from bcos_jax.explain.explanation import (
    Explanation,
    check_explainable,
    explain,
    explain_unit,
    mean_offset,
)
from bcos_jax.explain.probe import module_paths
from bcos_jax.explain.visualise import plot_contribution_map, save_explanation_grid, to_rgba

__all__ = ["Explanation", "check_explainable", "explain", "explain_unit", "mean_offset",
           "module_paths",
           "plot_contribution_map", "save_explanation_grid", "to_rgba"]
