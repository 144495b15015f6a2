"""Resumable stages of the launchers: each stage's result is stored with its settings.

A rerun with the same settings returns the stored result instead of redoing
the stage; other settings are refused, since the stored stage (and the ones
built on it) would no longer match them.
"""

import json
import pathlib

from bcos_jax.errors import UserError

RESULT_FILE = "result.json"


def finished(directory: pathlib.Path, settings: dict) -> dict | None:
  """The result of the stage in `directory` done with `settings`; None if it was not done.

  Raises:
    UserError: when it was done with other settings (the message names them).
  """
  path = directory / RESULT_FILE
  if not path.is_file():
    return None
  result = json.loads(path.read_text())
  if result["settings"] != settings:
    changed = sorted(k for k in settings.keys() | result["settings"].keys()
                     if settings.get(k) != result["settings"].get(k))
    raise UserError(f"{path} was made with other settings ({', '.join(changed)}: "
                    f"{ {k: result['settings'].get(k) for k in changed} } then, "
                    f"{ {k: settings.get(k) for k in changed} } now); use another --root, or "
                    "delete that stage's directory and the ones after it")
  return result


def record(directory: pathlib.Path, result: dict) -> None:
  """Stores a finished stage's result (which holds its "settings")."""
  (directory / RESULT_FILE).write_text(json.dumps(result, indent=2))
