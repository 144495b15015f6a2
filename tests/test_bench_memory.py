"""bench/memory.py: per-device bytes of the compiled train step, FSDP's split, the budget."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parents[1]


def test_fsdp_splits_the_state_and_the_budget_marks_what_fits(tmp_path):
  out = tmp_path / "memory.json"
  # No inherited device count: the script itself asks for 4 host devices before JAX starts.
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, str(ROOT / "bench" / "memory.py"), "--model", "cifar10_resnet20",
       "--fsdp", "1,4", "--devices", "4", "--batch_size", "16", "--image_size", "32",
       "--remat", "--budget_gib", "0.008", "--max_search", "0", "--json", str(out)],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  data = json.loads(out.read_text())
  assert data["backend"] == "cpu" and data["devices"] == 4
  assert "--xla_force_host_platform_device_count=4" in data["xla_flags"]
  full, split = data["rows"]
  assert (full["fsdp"], split["fsdp"]) == (1, 4)
  # Every leaf but a few small replicated ones (scalars) is split four ways.
  assert split["params_bytes"] == pytest.approx(full["params_bytes"] / 4, rel=0.01)
  assert split["optimizer_bytes"] == pytest.approx(full["optimizer_bytes"] / 4, rel=0.01)
  assert full["temp_bytes"] > 0 and split["temp_bytes"] > 0
  # The state's shardings account for the compiled step's arguments (plus the batch).
  for row in (full, split):
    state = row["params_bytes"] + row["state_bytes"] + row["optimizer_bytes"]
    assert 0 < row["argument_bytes"] - state < 16 * 32 * 32 * 3
  assert full["remat"] and split["remat"]  # a bare --remat is --remat=true
  assert (full["fits"], split["fits"]) == (False, True)  # 9.3 MiB and 6.6 MiB against 8.2
  lines = result.stdout.splitlines()
  assert any(line.startswith("backend: cpu") for line in lines)
  rows = [line.split() for line in lines if line.startswith("cifar10_resnet20 ")]
  assert [(r[1], r[2], r[-1]) for r in rows] == [("1", "true", "no"), ("4", "true", "yes")]


# The helpers run in a fresh interpreter: importing the script here would define its absl
# flags (--model, ...) a second time in this process, beside those of other commands.
_HELPER_CHECKS = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import memory
    from bcos_jax.errors import UserError

    assert memory.bare_remat(["m.py", "--remat", "--fsdp", "1"])[1] == "--remat=true"
    assert memory.bare_remat(["m.py", "--remat"])[1] == "--remat=true"
    assert memory.bare_remat(["m.py", "--remat", "false,true"])[1:] == ["--remat", "false,true"]
    flags = memory.host_device_flags(["m.py", "--devices", "8"], "--xla_foo=1")
    assert flags.split() == ["--xla_foo=1", "--xla_force_host_platform_device_count=8",
                             "--xla_disable_hlo_passes=cse_barrier_expander"], flags
    assert "count=8" not in memory.host_device_flags(
        ["m.py", "--devices=8"], "--xla_force_host_platform_device_count=2")
    assert memory.parse_bools(["false", "true"]) == [False, True]
    for bad in (lambda: memory.parse_bools(["maybe"]),
                # the CIFAR-10 net's family has no remat option
                lambda: memory.requested_settings(["v1_cifar9l_b2"], [1], [True])):
      try:
        bad()
        raise AssertionError("no error")
      except UserError as error:
        assert "remat" in str(error), error

    # The search: largest first, bounded, and the first that fits wins.
    fits = {"resnet18", "resnet34"}.__contains__
    assert memory.largest_fitting(["resnet152", "resnet50", "resnet34", "resnet18"], fits,
                                  3) == ("resnet34", ["resnet152", "resnet50", "resnet34"])
    assert memory.largest_fitting(["resnet152", "resnet50", "resnet34"], fits, 2) == (
        None, ["resnet152", "resnet50"])
    members = memory.distinct_members("resnet50")
    assert "resnet152" in members and "resnext50_32x4d" in members
    assert "resnet50_long" not in members  # the same architecture as resnet50
    assert not any(name.startswith("standard_") for name in members)  # another family
    print("helpers ok")
""")


def test_command_line_helpers_and_the_bounded_search():
  result = subprocess.run([sys.executable, "-c", _HELPER_CHECKS, str(ROOT / "bench")],
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0 and "helpers ok" in result.stdout, result.stderr[-2000:]
