"""Exact explanations: the dynamic linear map W(x) of a B-cos network.

A B-cos network computes y = W(x)·x. With its dynamic factors detached
(explanation mode: every layer called with `explain=True`), the network is
linear for the gradient, so one vector-Jacobian product with a one-hot
cotangent gives row t of W(x), and x·W_t(x) sums to the logit minus any
constant term (the logit bias).

A model is a B-cos network built by `bcos_jax.models.create` (or loaded),
called as `model(x6, explain=...)`; explanations always use its evaluation
view (`models.eval_mode`).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.explain import probe


@struct.dataclass
class Explanation:
  """The explanation of one or several outputs per image.

  With T explained outputs per image (T = 1 is stored without the T axis):
    logits: (N, C) the model's outputs (for a unit: (N,) its activation).
    targets: (N,) or (N, T) the explained outputs.
    weights: (N, H, W, 6) or (N, T, H, W, 6), W_t(x), the dynamic linear map.
    contributions: (N, H, W) or (N, T, H, W), sum over channels of x6 · W_t(x).
  """
  logits: jax.Array
  targets: jax.Array
  weights: jax.Array
  contributions: jax.Array


def _package(outputs, targets, weights, x6, squeeze: bool) -> Explanation:
  """Builds an Explanation from weights (T, N, H, W, 6)."""
  weights = jnp.moveaxis(weights, 0, 1)  # (N, T, H, W, 6)
  contributions = jnp.sum(x6[:, None] * weights, axis=-1)
  if squeeze:
    weights, contributions, targets = weights[:, 0], contributions[:, 0], targets[:, 0]
  return Explanation(outputs, targets, weights, contributions)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _explain_jit(graphdef: nnx.GraphDef, state: nnx.State, x6: jax.Array,
                 targets: jax.Array | None, top_k: int | None = None) -> Explanation:
  # Evaluation mode is a view made while tracing: no per-call cost (it is ~40 ms of
  # Python for a ResNet-50 outside jit).
  model = models.eval_mode(nnx.merge(graphdef, state))
  # One linearisation; the top class(es) are read off its forward pass.
  logits, vjp = jax.vjp(lambda x: model(x, explain=True), x6)
  if targets is None and top_k is None:
    targets = jnp.argmax(logits, axis=-1)
  elif targets is None:
    if not 1 <= top_k <= logits.shape[-1]:  # checked while tracing: the shape is known
      raise UserError(f"top_k={top_k} must be between 1 and the model's "
                      f"{logits.shape[-1]} classes")
    targets = jax.lax.top_k(logits, top_k)[1]  # ties: the lower class first
  squeeze = targets.ndim == 1
  targets = targets[:, None] if squeeze else targets
  # One cotangent per explained class: (T, N, C); vmap runs the T transposes
  # as one batched backward pass.
  cotangents = jnp.moveaxis(jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype), 1, 0)
  if cotangents.shape[0] == 1:  # one class: a plain backward (the vmapped one is ~12 % slower)
    weights = vjp(cotangents[0])[0][None]
  else:
    (weights,) = jax.vmap(vjp)(cotangents)
  return _package(logits, targets, weights, x6, squeeze)


def check_targets(targets, num_images: int) -> jax.Array:
  """Targets as an integer array of shape (N,) or (N, T); ValueError otherwise."""
  targets = jnp.asarray(targets)
  if targets.ndim not in (1, 2) or targets.shape[0] != num_images:
    raise UserError(f"targets must have shape (N,) or (N, T) with N = {num_images} "
                     f"images, got {targets.shape}")
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise UserError(f"targets must be integer class indices, got dtype {targets.dtype}")
  return targets


def check_classes(classes, num_classes: int, what: str = "classes") -> None:
  """Raises a UserError unless every class index is in 0..num_classes-1.

  Needs concrete values (not a traced array): a one-hot of an index out of
  range is all zeros, so the explanation would silently be zero.
  """
  classes = np.asarray(classes)
  if classes.size and not (classes.min() >= 0 and classes.max() < num_classes):
    raise UserError(f"{what} {classes.ravel().tolist()} must be class indices of the model, "
                    f"0..{num_classes - 1}")


def check_explainable(model: nnx.Module, x6: jax.Array) -> None:
  """Raises a clear error unless `model` is a B-cos network and `x6` its input."""
  found = models.info(model)
  if not found.bcos:
    raise UserError(f"{found.name} is not a B-cos network: its gradient is no exact "
                     "explanation (y != W(x)·x). Use a post-hoc method of "
                     "bcos_jax.evaluate.attribution instead, e.g. input_x_gradient or grad_cam")
  models.check_input(model, x6)


def explain(model: nnx.Module, x6: jax.Array, targets: jax.Array | None = None) -> Explanation:
  """Explains logits of a batch of encoded images with one `jax.vjp`.

  Args:
    model: a B-cos model (called as `model(x6, explain=True)`).
    x6: (N, H, W, 6) images encoded with `bcos_jax.nn.add_inverse`.
    targets: the logits to explain: None (each image's top class), (N,) one
      class per image, or (N, T) T classes per image (e.g. the top T:
      `jax.lax.top_k(logits, T)[1]`).

  Returns:
    An `Explanation`; `weights[i]` is W_t(x_i), and `contributions[i]` sums
    to logits[i, t] minus the model's logit bias (and minus `mean_offset`
    for a model that normalises its input, a B-cosified one).

  Raises:
    ValueError: if the model is not a B-cos network, x6 not an encoded NHWC
      batch, or targets do not fit it.
  """
  check_explainable(model, x6)
  if targets is not None:
    targets = check_targets(targets, x6.shape[0])
  graphdef, state = nnx.split(model)
  return _explain_jit(graphdef, state, x6, targets)


def explain_top_k(model: nnx.Module, x6: jax.Array, k: int) -> Explanation:
  """Explains each image's k highest logits, in one linearisation.

  Args:
    model: a B-cos model.
    x6: (N, H, W, 6) encoded images.
    k: how many classes per image, 1..C.

  Returns:
    An `Explanation` with targets (N, k), each row the image's top k classes
    from the highest logit down (`jax.lax.top_k`: ties go to the lower class),
    weights (N, k, H, W, 6) and contributions (N, k, H, W).

  Raises:
    UserError: as `explain`, or for k outside 1..C.
  """
  check_explainable(model, x6)
  graphdef, state = nnx.split(model)
  return _explain_jit(graphdef, state, x6, None, int(k))


def unit_activation(output: jax.Array, path: tuple[str | int, ...], channel: int,
                    position: tuple[int, ...] | None) -> jax.Array:
  """(N,) a unit's activations, read off its layer's output (N, ..., channels).

  The unit is `channel` at `position` (without batch and channel axes), or
  for position None the sum of the channel over all positions. Both are
  checked against the output's shape, which is known while tracing (JAX would
  clamp an index out of range to the last channel without a word).
  """
  layer = ".".join(map(str, path))
  if not 0 <= channel < output.shape[-1]:
    raise UserError(f"channel {channel} is out of range: layer {layer!r} has "
                    f"{output.shape[-1]} channels (0..{output.shape[-1] - 1})")
  if position is None:
    return jnp.sum(output.reshape(output.shape[0], -1, output.shape[-1]), axis=1)[:, channel]
  spatial = output.shape[1:-1]
  inside = len(position) == len(spatial) and all(
      0 <= p < s for p, s in zip(position, spatial, strict=True))
  if not inside:
    raise UserError(f"position {position} is not in layer {layer!r}'s output of "
                    f"{len(spatial)}-d positions {spatial}")
  return output[(slice(None), *position, channel)]


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _explain_unit_jit(graphdef, state, x6, path, channel, position) -> Explanation:
  # Evaluation mode is a view made while tracing: no per-call cost (it is ~40 ms of
  # Python for a ResNet-50 outside jit).
  model = models.eval_mode(nnx.merge(graphdef, state))
  tap = probe.attach(model, path)

  def unit(x):
    tap.seen.clear()
    model(x, explain=True)
    return unit_activation(probe.single(tap, path), path, channel, position)

  activations, vjp = jax.vjp(unit, x6)
  (weights,) = jax.vmap(vjp)(jnp.ones((1, *activations.shape), activations.dtype))
  targets = jnp.full((x6.shape[0], 1), channel)
  return _package(activations, targets, weights, x6, squeeze=True)


def explain_unit(model: nnx.Module, x6: jax.Array, layer: str | Sequence[str | int],
                 channel: int, position: Sequence[int] | None = None) -> Explanation:
  """Explains an intermediate unit: its dynamic linear map W_{1→l}(x) (Fig. 1).

  Args:
    model: a B-cos model.
    x6: (N, H, W, 6) encoded images.
    layer: the submodule whose output holds the unit, as a dotted path from
      `module_paths(model)` (e.g. 'layers.4') or a tuple of parts.
    channel: the output channel (last axis).
    position: the unit's position in the layer's output without batch and
      channel axes, e.g. (row, col) for a feature map; None explains the sum
      of the channel over all positions.

  Returns:
    An `Explanation` whose `logits` are the unit's activations (N,), with
    `weights` (N, H, W, 6) and `contributions` (N, H, W) summing to them.

  Raises:
    UserError: for a layer that is not a submodule (the valid ones are
      listed), or a channel or position outside the layer's output.
  """
  check_explainable(model, x6)
  path = probe.parse_path(layer)
  probe.check_path(model, path)
  position = None if position is None else tuple(int(p) for p in position)
  graphdef, state = nnx.split(model)
  return _explain_unit_jit(graphdef, state, x6, path, int(channel), position)


def mean_offset(model: nnx.Module, weights: jax.Array) -> jax.Array:
  """-W(x)·mean: what a model's own input normalisation adds to an explained logit.

  A B-cosified network computes f((x - mean) / std) with f dynamic-linear, so
  logit = bias + sum(x · W(x)) - W(x)·mean, where W(x) (`Explanation.weights`)
  is taken w.r.t. the encoded input x. Zero for models without one.

  Args:
    model: the explained model.
    weights: (..., H, W, C) dynamic weights, e.g. `Explanation.weights`.

  Returns:
    (...,) the offset of each explained logit.
  """
  norm = getattr(model, "input_norm", None)
  if norm is None or norm.mean is None:
    return jnp.zeros(weights.shape[:-3], weights.dtype)
  return -jnp.sum(weights * jnp.asarray(norm.mean, weights.dtype), axis=(-3, -2, -1))
