"""Test setup: 8 fake CPU devices (set before JAX starts) and parsed absl flags."""

import os
import shutil
import tempfile

# Must run before JAX initialises its backends: sharding is then tested on
# eight real (CPU) devices.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# The partitionable threefry (JAX's default) takes seconds to compile for each
# small parameter shape on CPU; the classic one takes a fraction of a second.
# Only the random numbers change, not what the tests check. Set in the
# environment, so the processes tests start (main, launchers, notebook
# kernels) draw the same numbers as the tests themselves.
os.environ["JAX_THREEFRY_PARTITIONABLE"] = "0"

# One persistent compilation cache per test run, shared by the xdist workers and
# inherited by the processes tests start (main, launchers, notebook kernels):
# many tests compile the same small train and explanation steps. It lives only
# for this run (removed at the end), so a run's timing never depends on an
# earlier one.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"bcos_jax-tests-xla-{_RUN_ID}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

from absl import flags  # noqa: E402

# Library code (grain workers, ml_collections) reads absl flags; under pytest
# nobody parses argv, so mark them parsed with their defaults.
flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, (
      f"expected 8 fake CPU devices, got {jax.devices()}: was JAX imported before conftest?")


def pytest_sessionfinish(session):
  if not hasattr(session.config, "workerinput"):  # the controller, after every worker
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
