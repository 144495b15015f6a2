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
  commands = _readme_commands()
  assert any("pytest" in c for c in commands)
  for command in commands:
    assert command in ci, f"README command {command!r} is not what .ci/run runs"


def test_ci_does_not_hide_the_test_exit_code():
  ci = (ROOT / ".ci" / "run").read_text()
  assert "set -euo pipefail" in ci
  assert "|| true" not in ci and "| tee" not in ci
