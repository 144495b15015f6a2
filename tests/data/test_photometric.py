"""The v1 photometric tail on the device equals the host's on the same draws."""

import chex
import jax
import numpy as np
import pytest

from bcos_jax import data
from bcos_jax.data import augment, photometric


def _levels_apart(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
  """(largest difference in levels, fraction of values that differ)."""
  diff = np.abs(a.astype(int) - b.astype(int))
  return int(diff.max()), float((diff > 0).mean())


def test_color_jitter_and_lighting_match_the_host_on_the_same_draws(sample_images):
  rng = np.random.default_rng(0)
  images = np.stack([image[:256, :256] for image in sample_images.values()] * 4)  # 12 images
  draws = np.stack([augment.draw_color_jitter(rng) for _ in images])
  shifts = np.stack([augment.draw_lighting(rng) for _ in images])
  # Every order of the three ops is among the draws.
  assert len({tuple(d[3:]) for d in draws}) >= 4
  host = np.stack([augment.apply_lighting(augment.apply_color_jitter(image, d), s)
                   for image, d, s in zip(images, draws, shifts, strict=True)])
  device = jax.jit(photometric.apply)({"image": images, photometric.JITTER: draws,
                                       photometric.LIGHTING: shifts, "label": np.zeros(12)})
  assert set(device) == {"image", "label"}  # the draws are used up
  chex.assert_shape(device["image"], images.shape)
  assert device["image"].dtype == np.uint8
  largest, fraction = _levels_apart(np.asarray(device["image"]), host)
  assert largest <= 1 and fraction < 1e-3, (largest, fraction)
  assert np.any(host != images)  # the ops did something


def test_lighting_saturates_as_the_host():
  image = np.array([[[0, 128, 255]]], np.uint8)
  shift = np.array([-5, 3, 7], np.float32)
  np.testing.assert_array_equal(np.asarray(photometric.lighting(image, shift)),
                                augment.apply_lighting(image, shift))
  np.testing.assert_array_equal(augment.apply_lighting(image, shift), [[[0, 131, 255]]])


@pytest.mark.parametrize("name", ["imagenet_v1", "inception_v1"])
def test_split_recipe_is_the_whole_recipe(jpeg_folder, name):
  # Host part then device part, from the same per-record generator, equals the host recipe.
  whole, _ = data.train_transforms(name, on_device=False)
  host, device = data.train_transforms(name, on_device=True)
  paths = sorted((jpeg_folder / "train").glob("*/*.jpg"))[:3]
  records = [{"image": path.read_bytes(), "label": 0} for path in paths]
  want = np.stack([whole(r, np.random.default_rng(i))["image"] for i, r in enumerate(records)])
  parts = [host(r, np.random.default_rng(i)) for i, r in enumerate(records)]
  batch = {key: np.stack([p[key] for p in parts]) for key in parts[0]}
  got = np.asarray(jax.jit(device)(batch)["image"])
  largest, fraction = _levels_apart(got, want)
  assert largest <= 1 and fraction < 1e-3, (largest, fraction)


def test_a_recipe_without_photometric_ops_says_which_have_them():
  with pytest.raises(ValueError, match="recipe 'bcos_final' has no photometric ops to move to "
                     "the device; recipes that do: imagenet_v1, inception_v1"):
    data.train_transforms("bcos_final", on_device=True)
  assert data.train_transforms("bcos_final", on_device=False)[1] is None


def test_the_train_step_jitters_on_the_device_as_the_host_would(sample_images):
  import optax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from bcos_jax import models, sharding  # noqa: PLC0415
  from bcos_jax.train import state as train_state  # noqa: PLC0415
  from bcos_jax.train import steps  # noqa: PLC0415

  rng = np.random.default_rng(1)
  images = np.stack([np.asarray(image[::8, ::8][:32, :32]) for image in sample_images.values()]
                    * 3)[:8]  # (8, 32, 32, 3)
  draws = np.stack([augment.draw_color_jitter(rng) for _ in images])
  shifts = np.stack([augment.draw_lighting(rng) for _ in images])
  jittered = np.stack([augment.apply_lighting(augment.apply_color_jitter(image, d), s)
                       for image, d, s in zip(images, draws, shifts, strict=True)])
  labels = np.arange(8, dtype=np.int32) % 10
  mesh = sharding.make_mesh()
  optimizer = optax.adam(1e-3)
  losses = []
  for device_transform, batch in (
      (None, {"image": jittered, "label": labels}),
      (photometric.apply, {"image": images, "label": labels, photometric.JITTER: draws,
                           photometric.LIGHTING: shifts})):
    graphdef, state = train_state.create(
        models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=(4,) * 8), optimizer)
    state = sharding.place_state(state, mesh)
    step = steps.make_train_step(graphdef, optimizer, optax.constant_schedule(1e-3), mesh,
                                 state, device_transform=device_transform)
    _, metrics = step(state, sharding.shard_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  assert losses[1] == pytest.approx(losses[0], rel=1e-3)
