"""Test setup: 8 fake CPU devices (set before JAX starts) and parsed absl flags."""

import os

# Must run before JAX initialises its backends: sharding is then tested on
# eight real (CPU) devices.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

from absl import flags  # noqa: E402

# Library code (grain workers, ml_collections) reads absl flags; under pytest
# nobody parses argv, so mark them parsed with their defaults.
flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402
import pytest  # noqa: E402

# The partitionable threefry (JAX's default) takes seconds to compile for each
# small parameter shape on CPU; the classic one takes a fraction of a second.
# Only the random numbers change, not what the tests check.
jax.config.update("jax_threefry_partitionable", False)


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, (
      f"expected 8 fake CPU devices, got {jax.devices()}: was JAX imported before conftest?")
