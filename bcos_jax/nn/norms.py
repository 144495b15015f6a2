"""The normalisation layers of B-cos v2 (TPAMI 2024, Sec. 3.3), NHWC.

A norm layer keeps a B-cos network dynamic-linear when its statistics are
treated as input-dependent constants. Two kinds exist in the official code:
- uncentered: x / sqrt(Var[x] + eps): the mean is used for the variance but
  never subtracted, so no constant offset enters the network;
- centered and detachable: (x - E[x]) / sqrt(Var[x] + eps); subtracting the
  mean is linear in x, so only the standard deviation is a dynamic factor.
In explanation mode the standard deviation is detached (`stop_gradient`).
The official `NoBias` / `Unaffine` wrappers are `use_bias=False` /
`use_scale=use_bias=False` here.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

EPS = 1e-5  # PyTorch's default for every norm layer the official models use.
MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * running + m * batch.


def normalise(x: jax.Array, axes: tuple[int, ...], *, centered: bool, explain: bool,
              eps: float = EPS, var: jax.Array | None = None) -> jax.Array:
  """(x - mean) / std or x / std over `axes`; std detached in explanation mode.

  Args:
    x: the input.
    axes: the axes the statistics reduce over.
    centered: subtract the mean (a detachable norm) or not (uncentered).
    explain: detach the standard deviation.
    eps: added to the variance.
    var: a precomputed (biased) variance broadcastable to x, e.g. BatchNorm's
      running variance; computed over `axes` when None.
  """
  mean = jnp.mean(x, axis=axes, keepdims=True) if (centered or var is None) else None
  if var is None:
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)  # biased, as official
  std = jnp.sqrt(var + eps)
  if explain:
    std = jax.lax.stop_gradient(std)
  return ((x - mean) if centered else x) / std


class _AffineNorm(nnx.Module):
  """A per-channel (last axis) scale and bias, either of them optional."""

  def __init__(self, features: int, use_scale: bool, use_bias: bool):
    self.features = features
    self.scale = nnx.Param(jnp.ones((features,), jnp.float32)) if use_scale else None
    self.bias = nnx.Param(jnp.zeros((features,), jnp.float32)) if use_bias else None

  def _affine(self, y: jax.Array) -> jax.Array:
    if self.scale is not None:
      y = y * self.scale[...].astype(y.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y

  def _check(self, x: jax.Array, ndim: int | None = None) -> None:
    if x.shape[-1] != self.features or (ndim is not None and x.ndim != ndim):
      want = f"{ndim}-D " if ndim else ""
      raise ValueError(f"{type(self).__name__} expects {want}inputs with {self.features} "
                       f"channels on the last axis, got shape {x.shape}")


class BatchNorm(_AffineNorm):
  """Uncentered BatchNorm (official `BatchNormUncentered2d`) over all but the last axis,
  or torch's centered `nn.BatchNorm2d` (`centered=True`, the conventional networks).

  Training normalises with the batch's biased variance and updates the running
  variance with it (momentum 0.1; the centered torch layer updates it with the
  unbiased variance and keeps a running mean); evaluation
  (`use_running_average=True`, set by `model.eval()` or `nnx.view`) uses the
  running statistics.
  """

  def __init__(self, features: int, *, use_scale: bool = True, use_bias: bool = True,
               centered: bool = False, momentum: float = MOMENTUM, eps: float = EPS,
               use_running_average: bool = False, rngs: nnx.Rngs | None = None):
    del rngs  # Deterministic initialisation; accepted for a uniform signature.
    super().__init__(features, use_scale, use_bias)
    self.momentum = momentum
    self.eps = eps
    self.use_running_average = use_running_average
    self.running_var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
    self.running_mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32)) if centered else None

  def set_view(self, use_running_average: bool | None = None):
    """Used by `nnx.view(model, use_running_average=...)`."""
    if use_running_average is not None:
      self.use_running_average = use_running_average

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    self._check(x)
    axes = tuple(range(x.ndim - 1))
    centered = self.running_mean is not None
    if self.use_running_average:
      var = self.running_var[...].astype(x.dtype)
      mean = self.running_mean[...].astype(x.dtype) if centered else None
    else:
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      self.running_var[...] = self._updated(self.running_var, var * self._unbiasing(x, axes))
      if centered:
        self.running_mean[...] = self._updated(self.running_mean, mean)
    if centered:
      std = jnp.sqrt(var + self.eps)
      return self._affine((x - mean) / (jax.lax.stop_gradient(std) if explain else std))
    return self._affine(normalise(x, axes, centered=False, explain=explain, eps=self.eps,
                                  var=var))

  def _unbiasing(self, x: jax.Array, axes: tuple[int, ...]) -> float:
    """n / (n - 1) for torch's centered layer, whose running variance is unbiased."""
    if self.running_mean is None:
      return 1.0
    n = math.prod(x.shape[a] for a in axes)
    return n / max(n - 1, 1)

  def _updated(self, running: nnx.BatchStat, batch: jax.Array) -> jax.Array:
    new = (1 - self.momentum) * running[...] + self.momentum * batch.astype(jnp.float32)
    return jax.lax.stop_gradient(new)


class GroupNorm(_AffineNorm):
  """GroupNorm on NHWC inputs, centered (detachable) or uncentered.

  `num_groups=1` is the official "LayerNorm2d" (`GNLayerNorm2d`): statistics
  over all channels and positions of each image.
  """

  def __init__(self, features: int, num_groups: int = 1, *, centered: bool = True,
               use_scale: bool = True, use_bias: bool = True, eps: float = EPS,
               rngs: nnx.Rngs | None = None):
    del rngs
    if features % num_groups:
      raise ValueError(f"num_groups={num_groups} must divide features={features}")
    super().__init__(features, use_scale, use_bias)
    self.num_groups = num_groups
    self.centered = centered
    self.eps = eps

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    self._check(x, ndim=4)
    n, h, w, c = x.shape
    grouped = x.reshape(n, h, w, self.num_groups, c // self.num_groups)
    y = normalise(grouped, (1, 2, 4), centered=self.centered, explain=explain, eps=self.eps)
    return self._affine(y.reshape(x.shape))


class LayerNorm(_AffineNorm):
  """LayerNorm over the last axis, centered (detachable) or uncentered.

  On NHWC feature maps this is the official PositionNorm (statistics over the
  channels at each position); on (N, tokens, D) it is the ViT LayerNorm.
  """

  def __init__(self, features: int, *, centered: bool = True, use_scale: bool = True,
               use_bias: bool = True, eps: float = EPS, rngs: nnx.Rngs | None = None):
    del rngs
    super().__init__(features, use_scale, use_bias)
    self.centered = centered
    self.eps = eps

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    self._check(x)
    return self._affine(normalise(x, (-1,), centered=self.centered, explain=explain,
                                  eps=self.eps))


NormFactory = Callable[..., nnx.Module]


def _variants(name: str, factory: NormFactory) -> dict[str, NormFactory]:
  return {
      name: factory,
      f"NoBias({name})": functools.partial(factory, use_bias=False),
      f"Unaffine({name})": functools.partial(factory, use_scale=False, use_bias=False),
  }


# The official norm layers by their class names, each with its NoBias and
# Unaffine variants; a factory takes (features, *, rngs).
NORM_LAYERS: dict[str, NormFactory] = {
    **_variants("BatchNormUncentered2d", BatchNorm),
    # torch's nn.BatchNorm2d: the conventional networks (not dynamic-linear).
    **_variants("BatchNorm2d", functools.partial(BatchNorm, centered=True)),
    **_variants("GNLayerNormUncentered2d", functools.partial(GroupNorm, num_groups=1,
                                                              centered=False)),
    **_variants("PositionNormUncentered2d", functools.partial(LayerNorm, centered=False)),
    **_variants("DetachableGNLayerNorm2d", functools.partial(GroupNorm, num_groups=1)),
    **_variants("DetachablePositionNorm2d", LayerNorm),
    **_variants("DetachableLayerNorm", LayerNorm),
}


def make_norm(name: str, features: int, **kwargs) -> nnx.Module:
  """Builds an official norm layer by name (see `NORM_LAYERS`).

  Raises:
    ValueError: for an unknown name; the message lists the known ones.
  """
  if name not in NORM_LAYERS:
    raise ValueError(f"unknown norm layer {name!r}; known: {', '.join(sorted(NORM_LAYERS))}")
  return NORM_LAYERS[name](features, **kwargs)
