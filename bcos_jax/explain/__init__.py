"""Explanations of B-cos models: W(x) via one jax.vjp, and their visualisation."""

from bcos_jax.explain.explanation import Explanation, check_explainable, explain, explain_unit
from bcos_jax.explain.probe import module_paths
from bcos_jax.explain.visualise import plot_contribution_map, save_explanation_grid, to_rgba

__all__ = ["Explanation", "check_explainable", "explain", "explain_unit", "module_paths",
           "plot_contribution_map", "save_explanation_grid", "to_rgba"]
