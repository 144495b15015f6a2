"""Average pooling with torch's conventions, and the box smoothing built on it.

Every pooling of the model families (stems, transitions, VGG's "M",
Inception's branches) and every box filter of the tools (the colour
explanation's opacity, the localisation metric's smoothing) is this one
function: torch's `avg_pool2d` with zero padding counted in the mean
(`count_include_pad=True`, torch's default), so the official outputs are
matched exactly.
"""

import jax
import jax.numpy as jnp

# Max-pooling lives with the backward rules that DeepLIFT gives it; re-exported here.
from bcos_jax.nn.backward_rules import max_pool

__all__ = ["avg_pool", "box_smooth", "max_pool"]


def avg_pool(x: jax.Array, window: int, strides: int = 1, padding: int = 0) -> jax.Array:
  """torch's AvgPool2d on NHWC inputs (zero padding counted in the mean).

  Args:
    x: (N, H, W, C).
    window: side of the square window.
    strides: step between windows.
    padding: zeros added on every side of H and W.
  """
  pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, window, window, 1),
                                 (1, strides, strides, 1), pads)
  return summed / (window * window)


def box_smooth(maps: jax.Array, size: int) -> jax.Array:
  """Mean over size×size windows of the last two axes, stride 1, the same size out.

  torch's `avg_pool2d(maps, size, stride=1, padding=(size - 1) // 2)`, as the
  official visualisation and localisation code smooth; an odd `size` keeps
  the map in place.

  Args:
    maps: (..., H, W).
    size: the window side (1: the identity).
  """
  maps = jnp.asarray(maps)
  if size <= 1:
    return maps
  leading = maps.shape[:-2]
  flat = maps.reshape(-1, *maps.shape[-2:], 1)
  return avg_pool(flat, size, 1, (size - 1) // 2).reshape(*leading, *maps.shape[-2:])
