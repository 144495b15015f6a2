"""What every `python -m bcos_jax.*` command shares: flags, a quiet console, user errors.

`run(main)` replaces `absl.app.run(main)`: a bad flag or config override and
any `errors.UserError` end the command with one line, `error: ...`, and exit
code 2; `--verbosity=1` (or `BCOS_JAX_TRACEBACK=1`) shows the traceback
instead. Library logs stay at WARNING unless `--verbosity` is given.
"""

import difflib
import importlib.util
import os
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import ConfigDict

from bcos_jax import console
from bcos_jax.errors import UserError

USAGE_EXIT_CODE = 2


def show_tracebacks() -> bool:
  """--verbosity >= 1, or BCOS_JAX_TRACEBACK=1 in the environment."""
  if os.environ.get("BCOS_JAX_TRACEBACK", "") not in ("", "0"):
    return True
  return console.verbosity_given() and flags.FLAGS.verbosity >= 1


def fail(message: str) -> None:
  """Prints `error: message` and exits with the usage exit code."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USAGE_EXIT_CODE)


def _fields(config: ConfigDict, prefix: str = "") -> list[str]:
  names = []
  for key in config.keys():
    value = config[key]
    if isinstance(value, ConfigDict) and value.keys():
      names += _fields(value, f"{prefix}{key}.")
    else:
      names.append(f"{prefix}{key}")
  return names


def _has_field(config: ConfigDict, path: str) -> bool:
  node = config
  for part in path.split("."):
    if not isinstance(node, ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def unknown_field_message(path: str, config: ConfigDict) -> str:
  """"unknown config field 'x'; did you mean 'y'?" with the valid fields listed."""
  fields = _fields(config)
  by_leaf = {name.rsplit(".", 1)[-1]: name for name in fields}
  close = (difflib.get_close_matches(path, fields, n=1, cutoff=0.6)
           or [by_leaf[m] for m in difflib.get_close_matches(path.rsplit(".", 1)[-1],
                                                             list(by_leaf), n=1, cutoff=0.6)])
  hint = f"; did you mean {close[0]!r}?" if close else "."
  return f"unknown config field {path!r}{hint} Valid fields: {', '.join(fields)}"


def _load_config_file(argv: list[str]) -> ConfigDict | None:
  """The config `--config=FILE[:variant]` names (ml_collections had not finished loading it)."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path, _, variant = arg[len("--config="):].partition(":")
      spec = importlib.util.spec_from_file_location("bcos_jax_user_config", path)
      if spec is None or spec.loader is None:
        return None
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module.get_config(variant or None)
  return None


def _config_override_problem(argv: list[str]) -> str | None:
  """The message for the first --config.<field> override the config lacks."""
  if "config" not in flags.FLAGS:
    return None
  config = flags.FLAGS["config"].value
  if not isinstance(config, ConfigDict):
    try:
      config = _load_config_file(argv)
    except Exception:  # noqa: BLE001  (the original parse error is reported instead)
      return None
  if not isinstance(config, ConfigDict):
    return None
  for arg in argv[1:]:
    if arg.startswith("--config."):
      path = arg[len("--config."):].split("=", 1)[0]
      if not _has_field(config, path):
        return unknown_field_message(path, config)
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    fail(f"{error} (see --helpfull)")
  except (KeyError, AttributeError, TypeError, ValueError):
    problem = _config_override_problem(argv)
    if problem is None:
      raise
    fail(problem)
  return []  # not reached


def run(main: Callable[[list[str]], int | None]) -> None:
  """absl's app.run, with the console quiet and user errors as one line (exit code 2)."""

  def guarded(argv: list[str]) -> int | None:
    console.quiet_libraries()
    try:
      return main(argv)
    except (UserError, app.UsageError) as error:
      if show_tracebacks():
        raise
      fail(str(error))
    return None

  app.run(guarded, flags_parser=_parse_flags)
