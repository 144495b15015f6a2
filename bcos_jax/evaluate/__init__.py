"""Evaluating models and their explanations, one module per concept.

- `accuracy`: one sharded evaluation over a split (training and the tools use it);
- `localisation`: the grid pointing game of the papers, and the whole analysis (`run`);
- `attribution`: the model-inherent explanation and the post-hoc methods;
- `python -m bcos_jax.evaluate`: the localisation command.
"""

from bcos_jax.evaluate import accuracy, attribution, localisation

__all__ = ["accuracy", "attribution", "localisation"]
