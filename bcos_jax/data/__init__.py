"""Data: tfds sources, the embedded digits dataset, grain pipelines, augmentations."""

from bcos_jax.data.pipeline import (
                                    batch_rows,
                                    eval_dataset,
                                    num_eval_batches,
                                    train_dataset,
)
from bcos_jax.data.recipes import RECIPES, Recipe, get_recipe, train_transforms
from bcos_jax.data.sources import (
                                    DEFAULT_DATA_DIR,
                                    DatasetNotPreparedError,
                                    Source,
                                    class_names,
                                    open_source,
                                    prepare_command,
                                    tfds_source,
)

__all__ = [
    "DEFAULT_DATA_DIR", "DatasetNotPreparedError", "RECIPES", "Recipe", "Source", "batch_rows",
    "class_names", "eval_dataset", "get_recipe", "num_eval_batches", "open_source",
    "prepare_command", "tfds_source", "train_dataset", "train_transforms",
]
