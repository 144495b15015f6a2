"""Colour explanations (official parity) and the contribution-map plot."""

import chex
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from golden_weights import load

from bcos_jax import explain as bx
from bcos_jax.explain import visualise

GOLDEN = load("gradient_to_image.npz")
CASES = sorted({k.split("/")[0] for k in GOLDEN})


def _case(case):
  x6 = np.transpose(GOLDEN[f"{case}/x6"], (1, 2, 0))
  weights = np.transpose(GOLDEN[f"{case}/weights"], (1, 2, 0))
  return x6, weights, int(GOLDEN[f"{case}/smooth"]), float(GOLDEN[f"{case}/alpha_percentile"])


@pytest.mark.parametrize("case", CASES)
def test_to_rgba_matches_the_official_visualisation(case):
  x6, weights, smooth, percentile = _case(case)
  rgba = bx.to_rgba(x6, weights, smooth=smooth, alpha_percentile=percentile)
  chex.assert_shape(rgba, (*x6.shape[:2], 4))
  assert float(jnp.abs(rgba - GOLDEN[f"{case}/rgba"]).max()) <= 1e-3
  assert float(rgba.min()) >= 0 and float(rgba.max()) <= 1


def test_to_rgba_on_a_batch_equals_one_image_at_a_time():
  x6, weights, _, _ = _case("case0")
  batch_x, batch_w = np.stack([x6, x6[::-1]]), np.stack([weights, -weights[::-1]])
  rgba = bx.to_rgba(batch_x, batch_w, smooth=3)
  for i in range(2):
    chex.assert_trees_all_close(rgba[i], bx.to_rgba(batch_x[i], batch_w[i], smooth=3))


def test_to_rgba_decodes_colour():
  """Weights aligned with a red pixel's encoding render red and opaque."""
  red = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
  x6 = jnp.tile(red, (5, 5, 1))
  rgba = bx.to_rgba(x6, x6, smooth=0, alpha_percentile=100)
  chex.assert_trees_all_close(rgba[2, 2], jnp.array([1.0, 0.0, 0.0, 1.0]), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(smooth=4), "odd"),
    (dict(alpha_percentile=0), "alpha_percentile"),
])
def test_to_rgba_rejects_bad_settings(kwargs, message):
  x6, weights, _, _ = _case("case1")
  with pytest.raises(ValueError, match=message):
    bx.to_rgba(x6, weights, **kwargs)
  with pytest.raises(ValueError, match="equal shape"):
    bx.to_rgba(x6, weights[..., :3])


def test_plot_contribution_map_is_symmetric_bwr():
  matplotlib.use("Agg")
  contributions = np.linspace(-1, 3, 64).reshape(8, 8)
  ax = bx.plot_contribution_map(contributions, percentile=100, colorbar=True)
  image = ax.get_images()[0]
  assert image.get_cmap().name == "bwr"
  assert image.get_clim() == pytest.approx((-3.0, 3.0))
  with pytest.raises(ValueError, match=r"\(H, W\)"):
    bx.plot_contribution_map(np.zeros((2, 8, 8)))


@pytest.mark.parametrize("shape", [(1,), (7,), (32, 32), (224, 224)])
def test_percentile_is_numpys(shape):
  values = jax.random.uniform(jax.random.key(1), shape)
  ties = jnp.round(values * 4) / 4
  for array in (values, ties):
    for q in (0, 1, 37.3, 50, 99.5, 100):
      expected = np.percentile(np.asarray(array, np.float64), q)
      chex.assert_trees_all_close(jax.jit(lambda a, q=q: visualise.percentile(a, q))(array),
                                  jnp.float32(expected), rtol=1e-6, atol=0)
