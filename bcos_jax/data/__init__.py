"""Data: tfds sources, the embedded digits dataset, grain pipelines, augmentations."""

from bcos_jax.data.pipeline import (
                                    ProcessShard,
                                    eval_dataset,
                                    num_eval_batches,
                                    per_process_batch_size,
                                    train_dataset,
)
from bcos_jax.data.recipes import RECIPES, Recipe, get_recipe
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
    "DEFAULT_DATA_DIR", "DatasetNotPreparedError", "ProcessShard", "RECIPES", "Recipe", "Source",
    "class_names", "eval_dataset", "get_recipe", "num_eval_batches", "open_source",
    "per_process_batch_size", "prepare_command", "tfds_source", "train_dataset",
]
