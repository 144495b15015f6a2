"""Contrastive explanations: why class a rather than class b (v1's `plot_top2_comparison`).

For a B-cos network, logit_a - logit_b = x·(W_a(x) - W_b(x)) + (bias_a - bias_b),
and the logit layer's bias is one constant for every class, so the difference
of the two contribution maps sums to the difference of the logits exactly
(for a model without input normalisation; a B-cosified one adds
`mean_offset` of the weight difference).
"""

import jax
import jax.numpy as jnp
from flax import nnx, struct

from bcos_jax.errors import UserError
from bcos_jax.explain import explanation


@struct.dataclass
class Contrast:
  """The explanation of logit_a - logit_b per image.

    logits: (N, C) the model's outputs.
    class_a, class_b: (N,) the contrasted classes.
    weights: (N, H, W, 6) W_a(x) - W_b(x).
    contributions: (N, H, W) x6 · (W_a(x) - W_b(x)), summed over channels.
  """
  logits: jax.Array
  class_a: jax.Array
  class_b: jax.Array
  weights: jax.Array
  contributions: jax.Array


def _per_image(classes, num_images: int, name: str) -> jax.Array:
  classes = jnp.asarray(classes)
  if classes.shape not in ((), (num_images,)) or not jnp.issubdtype(classes.dtype, jnp.integer):
    raise UserError(f"{name} must be one class index or one per image ({num_images},), "
                    f"got {classes.dtype} of shape {classes.shape}")
  # int32, not a weakly typed Python int: the explanation step then compiles once for both.
  return jnp.broadcast_to(classes.astype(jnp.int32), (num_images,))


def contrast(model: nnx.Module, x6: jax.Array, class_a: int | jax.Array,
             class_b: int | jax.Array) -> Contrast:
  """Explains logit_a - logit_b: both classes in one batched `explain`, then their difference.

  Args:
    model: a B-cos model.
    x6: (N, H, W, 6) encoded images.
    class_a, class_b: an int for every image, or (N,) one class per image
      (e.g. each image's top two: `jax.lax.top_k(logits, 2)[1].T`).

  Returns:
    A `Contrast` whose contributions sum to logits[:, a] - logits[:, b].

  Raises:
    UserError: as `explain`, or for classes outside the model's.
  """
  count = x6.shape[0]
  pair = jnp.stack([_per_image(class_a, count, "class_a"), _per_image(class_b, count, "class_b")],
                   axis=1)
  both = explanation.explain(model, x6, pair)
  explanation.check_classes(pair, both.logits.shape[-1], "class_a, class_b")
  return Contrast(both.logits, pair[:, 0], pair[:, 1], both.weights[:, 0] - both.weights[:, 1],
                  both.contributions[:, 0] - both.contributions[:, 1])
