"""Modified backward passes of ReLU and max-pooling, for two post-hoc attribution methods.

DeepLIFT and Guided Backprop are gradients in which some nonlinearities
pass back something else than their derivative. captum implements them with
backward hooks on `nn.ReLU` / `nn.MaxPool2d` modules; here the model's ReLU
(`bcos_jax.nn.ACTIVATIONS["relu"]`) and `max_pool` read the rule in force
while they are traced, and `use(rule)` sets it:

- `GUIDED_BACKPROP` (captum's `GuidedBackprop`): a ReLU passes back
  relu(upstream · 1[x > 0]); max-pooling keeps its gradient.
- `DEEPLIFT` (captum's `DeepLift`, the rescale rule): the model runs on a
  batch of inputs followed by their references, [x; x_ref]; a ReLU passes
  back upstream · Δout/Δin (its plain gradient where |Δin| < 1e-10), and
  max-pooling captum's rule: the output differences, max(out, out_ref) -
  out_ref and out - max(out, out_ref), are scattered back to the argmax
  positions of the input and of the reference, summed, and divided by Δin.

Outside `use`, and for every other layer, the ordinary derivative is used:
B-cos layers, norms, linear maps and average pooling are not overridden
(they are not among captum's nonlinearities either), so on ReLU-free B-cos
networks DeepLIFT is Input×Gradient and Guided Backprop the gradient.
A nonlinearity applied as a plain function in the official models (the
final `F.relu` of torchvision's DenseNet) is `jax.nn.relu` here, which no
rule changes, as captum's hooks do not see it.
"""

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp

from bcos_jax.nn.convolution import placed_at_tap, window_taps

GUIDED_BACKPROP = "guided_backprop"
DEEPLIFT = "deeplift"
RULES = (GUIDED_BACKPROP, DEEPLIFT)
# captum's threshold below which a difference counts as zero (the plain gradient is used).
DEEPLIFT_EPS = 1e-10

_ACTIVE: contextvars.ContextVar[str | None] = contextvars.ContextVar("backward_rule",
                                                                     default=None)


@contextlib.contextmanager
def use(rule: str):
  """Traces the model's ReLUs and max-pooling with `rule` (one of `RULES`) inside the block."""
  if rule not in RULES:
    raise ValueError(f"unknown backward rule {rule!r}; known: {', '.join(RULES)}")
  token = _ACTIVE.set(rule)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def _halves(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[x; x_ref] -> (x, x_ref): DeepLIFT's paired batch."""
  if z.shape[0] % 2:
    raise ValueError(f"DeepLIFT runs on [inputs; references]: an even batch, got {z.shape[0]}")
  return jnp.split(z, 2)


def _rescale(upstream_times_delta_out, delta_in, plain):
  """captum: plain gradient where |Δin| < eps, else (upstream · Δout) / Δin, both halves."""
  small = jnp.abs(delta_in) < DEEPLIFT_EPS
  both = jnp.concatenate([delta_in, delta_in])
  small = jnp.concatenate([small, small])
  return jnp.where(small, plain, upstream_times_delta_out / jnp.where(small, 1.0, both))


@jax.custom_vjp
def _guided_relu(z):
  return jax.nn.relu(z)


def _guided_relu_fwd(z):
  return jax.nn.relu(z), z


def _guided_relu_bwd(z, g):
  return (jax.nn.relu(g * (z > 0)),)


_guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


@jax.custom_vjp
def _deeplift_relu(z):
  return jax.nn.relu(z)


def _deeplift_relu_fwd(z):
  return jax.nn.relu(z), z


def _deeplift_relu_bwd(z, g):
  x, ref = _halves(z)
  delta_out = jax.nn.relu(x) - jax.nn.relu(ref)
  return (_rescale(g * jnp.concatenate([delta_out, delta_out]), x - ref, g * (z > 0)),)


_deeplift_relu.defvjp(_deeplift_relu_fwd, _deeplift_relu_bwd)


def relu(x: jax.Array) -> jax.Array:
  """The models' ReLU (a module in the official code): the rule in force, or plain."""
  rule = _ACTIVE.get()
  if rule == GUIDED_BACKPROP:
    return _guided_relu(x)
  if rule == DEEPLIFT:
    return _deeplift_relu(x)
  return jax.nn.relu(x)


def _window_taps(x, window, strides, padding):
  """The input each window position meets, padded with -inf (padding never wins the max)."""
  return window_taps(x, (window, window), (strides, strides), ((padding, padding),) * 2,
                     pad_value=-jnp.inf)


# The maximum of the window's shifted inputs, with a backward pass that sends each output's
# gradient to the first maximum of its window in row-major order, as torch's and XLA's
# max-pooling gradients do. XLA:CPU's own (select-and-scatter) is slow: the 3×3,
# stride-2 pooling of a ResNet's stem, 8 × 112² × 64, 131 ms against 26 this way.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _plain_max_pool(x, window, strides, padding):
  return functools.reduce(jnp.maximum, _window_taps(x, window, strides, padding))


def _plain_max_pool_fwd(x, window, strides, padding):
  out = _plain_max_pool(x, window, strides, padding)
  return out, (x, out)


def _plain_max_pool_bwd(window, strides, padding, residuals, g):
  x, out = residuals
  _, h, w, _ = x.shape
  padded_size = (h + 2 * padding, w + 2 * padding)
  taken = jnp.zeros(out.shape, bool)
  gradient = 0
  for position, tap in enumerate(_window_taps(x, window, strides, padding)):
    first = (tap == out) & ~taken
    taken = taken | first
    i, j = divmod(position, window)
    gradient = gradient + placed_at_tap(jnp.where(first, g, jnp.zeros((), g.dtype)), i, j,
                                        padded_size, (strides, strides))
  return (gradient[:, padding:padding + h, padding:padding + w],)


_plain_max_pool.defvjp(_plain_max_pool_fwd, _plain_max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _deeplift_max_pool(z, window, strides, padding):
  return _plain_max_pool(z, window, strides, padding)


def _deeplift_max_pool_fwd(z, window, strides, padding):
  return _plain_max_pool(z, window, strides, padding), z


def _deeplift_max_pool_bwd(window, strides, padding, z, g):
  x, ref = _halves(z)
  g_x, g_ref = _halves(g)
  pool = functools.partial(_plain_max_pool, window=window, strides=strides, padding=padding)
  out, unpool_x = jax.vjp(pool, x)  # the vjp scatters to the argmax positions (torch's unpool)
  out_ref, unpool_ref = jax.vjp(pool, ref)
  cross_max = jnp.maximum(out, out_ref)
  (to_x,) = unpool_x(g_x * (cross_max - out_ref))
  (to_ref,) = unpool_ref(g_ref * (out - cross_max))
  total = to_x + to_ref
  plain = jnp.concatenate([unpool_x(g_x)[0], unpool_ref(g_ref)[0]])
  return (_rescale(jnp.concatenate([total, total]), x - ref, plain),)


_deeplift_max_pool.defvjp(_deeplift_max_pool_fwd, _deeplift_max_pool_bwd)


def max_pool(x: jax.Array, window: int, strides: int = 1, padding: int = 0) -> jax.Array:
  """torch's MaxPool2d on NHWC inputs (padding never wins the max); DeepLIFT's rule inside
  `use(DEEPLIFT)`."""
  if _ACTIVE.get() == DEEPLIFT:
    return _deeplift_max_pool(x, window, strides, padding)
  return _plain_max_pool(x, window, strides, padding)
