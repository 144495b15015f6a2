"""Every path of `convolve` is XLA's convolution: values and both gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcos_jax.nn import convolution

# (input H, W, C), (kh, kw), strides, pads, dilation, groups, O, the path it takes
CASES = [
    ((9, 9, 4), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, 5, "pointwise"),
    ((9, 9, 4), (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1, 5, "pointwise"),
    ((8, 8, 6), (4, 4), (4, 4), ((0, 0), (0, 0)), (1, 1), 1, 5, "patchify"),
    ((9, 7, 3), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), 1, 5, "patchify"),  # a remainder
    ((2, 2, 8), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, 6, "im2col"),
    ((4, 4, 8), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1, 6, "im2col"),
    ((5, 3, 8), (1, 7), (1, 1), ((0, 0), (3, 3)), (1, 1), 1, 6, "im2col"),
    ((6, 7, 3), (3, 3), (1, 2), ((2, 0), (1, 2)), (2, 1), 1, 4, "im2col"),
    ((15, 15, 6), (7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1), 1, 5, "stem"),
    ((11, 10, 3), (3, 3), (2, 2), ((0, 0), (0, 0)), (1, 1), 1, 4, "stem"),
    ((9, 8, 6), (3, 3), (2, 1), ((1, 2), (0, 1)), (1, 1), 1, 4, "stem"),
    ((7, 7, 4), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, 5, "xla"),
    ((9, 9, 40), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1, 5, "xla"),  # not a stem
    ((2, 2, 8), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4, 8, "grouped"),
    ((9, 8, 8), (3, 3), (2, 1), ((1, 2), (0, 1)), (1, 2), 2, 6, "grouped"),
    ((7, 7, 4), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4, 8, "grouped"),  # two per group
    ((8, 8, 48), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4, 8, "grouped"),  # 12 in a group
    ((9, 9, 8), (7, 7), (1, 1), ((3, 3), (3, 3)), (1, 1), 8, 8, "depthwise"),
    ((9, 8, 4), (3, 3), (2, 1), ((1, 0), (2, 1)), (1, 2), 4, 4, "depthwise"),
    ((2, 2, 4), (7, 7), (1, 1), ((3, 3), (3, 3)), (1, 1), 4, 4, "depthwise"),
    ((2, 2, 4), (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, 4, "xla"),  # empty output
    ((9, 9, 4), (1, 1), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, 5, "xla"),  # padded 1×1
]


@pytest.mark.parametrize("shape, kernel_size, strides, pads, dilation, groups, out, path", CASES)
def test_every_path_is_the_convolution(shape, kernel_size, strides, pads, dilation, groups, out,
                                       path):
  kernel_shape = (*kernel_size, shape[-1] // groups, out)
  assert convolution.path((2, *shape), kernel_shape, strides, pads, dilation, groups) == path
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, *shape))
  kernel = jax.random.normal(keys[1], kernel_shape)

  def ours(x, kernel):
    return convolution.convolve(x, kernel, strides=strides, pads=pads, dilation=dilation,
                                feature_group_count=groups)

  def xla(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, pads, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)

  def with_gradients(conv):  # one compiled computation: values and both gradients
    def apply(x, kernel, key):
      out, vjp = jax.vjp(conv, x, kernel)
      return out, vjp(jax.random.normal(key, out.shape))
    return jax.jit(apply)

  expected, expected_gradients = with_gradients(xla)(x, kernel, keys[2])
  result, gradients = with_gradients(ours)(x, kernel, keys[2])
  chex.assert_shape(result, expected.shape)
  chex.assert_trees_all_close(result, expected, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(gradients, expected_gradients, atol=1e-4, rtol=1e-5)


def test_output_size_is_the_convolutions():
  for size, kernel, stride, pad, dilation in [(7, 3, 2, (1, 1), 1), (5, 3, 1, (2, 0), 2),
                                              (224, 7, 2, (3, 3), 1), (2, 3, 1, (1, 1), 1)]:
    x = np.zeros((1, size, 1, 1), np.float32)
    k = np.zeros((kernel, 1, 1, 1), np.float32)
    y = jax.lax.conv_general_dilated(x, k, (stride, 1), (pad, (0, 0)), rhs_dilation=(dilation, 1),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert convolution.output_size(size, kernel, stride, pad, dilation) == y.shape[1]


def test_the_depthwise_path_accumulates_bfloat16_in_float32():
  keys = jax.random.split(jax.random.key(1), 2)
  x = jax.random.normal(keys[0], (2, 9, 9, 16))
  kernel = jax.random.normal(keys[1], (7, 7, 1, 16))
  pads = ((3, 3), (3, 3))
  assert convolution.path(x.shape, kernel.shape, (1, 1), pads, (1, 1), 16) == "depthwise"
  expected = jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, feature_group_count=16,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
  low = convolution.convolve(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), strides=(1, 1),
                             pads=pads, feature_group_count=16)
  assert low.dtype == jnp.bfloat16
  # The inputs' own rounding (2^-9 each) and one final rounding, not 49 roundings of a sum.
  error = jnp.abs(low.astype(jnp.float32) - expected) / jnp.max(jnp.abs(expected))
  assert float(jnp.max(error)) < 2e-2


def test_the_grouped_gradients_accumulate_bfloat16_in_float32():
  keys = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(keys[0], (2, 8, 8, 32))
  kernel = jax.random.normal(keys[1], (3, 3, 8, 32))
  pads = ((1, 1), (1, 1))
  assert convolution.path(x.shape, kernel.shape, (1, 1), pads, (1, 1), 4) == "grouped"

  def gradients(conv, x, kernel):
    out, vjp = jax.vjp(conv, x, kernel)
    return vjp(jax.random.normal(keys[2], out.shape).astype(out.dtype))

  expected = gradients(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), pads, feature_group_count=4, dimension_numbers=("NHWC", "HWIO", "NHWC")),
      x, kernel)
  low = gradients(lambda x, k: convolution.convolve(x, k, strides=(1, 1), pads=pads,
                                                    feature_group_count=4),
                  x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  for got, want in zip(low, expected, strict=True):
    assert got.dtype == jnp.bfloat16
    error = jnp.abs(got.astype(jnp.float32) - want) / jnp.max(jnp.abs(want))
    assert float(jnp.max(error)) < 2e-2
