"""The README's commands are the ones CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]


def _readme_commands() -> list[str]:
  readme = (ROOT / "README.md").read_text()
  block = re.search(r"```bash\n(.*?)```", readme, re.S)
  assert block, "README.md must open with a bash block of commands"
  return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_commands():
  ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
  install_and_train, test = _readme_commands()
  install, _, train = install_and_train.partition(" && ")
  assert train.startswith("python -m bcos_jax.main --config=configs/")
  assert "pytest" in test
  for command in (install, test):
    assert command in ci, f"README command {command!r} is not what .ci/run runs"


def test_readme_main_job_config_exists():
  install_and_train, _ = _readme_commands()
  config = re.search(r"--config=(\S+)", install_and_train).group(1)
  assert (ROOT / config).is_file()


def test_ci_does_not_hide_the_test_exit_code():
  ci = (ROOT / ".ci" / "run").read_text()
  assert "set -euo pipefail" in ci
  assert "|| true" not in ci and "| tee" not in ci
