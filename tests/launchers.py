"""The scripts in launch/ as modules, for tests that run their `main` in process."""

import importlib.util
import pathlib
import sys

from absl import flags

LAUNCH_DIR = pathlib.Path(__file__).parents[1] / "launch"
_FLAG_NAMES: dict[str, set[str]] = {}  # launcher -> the flags its module defines


def load(name: str):
  """launch/<name>.py as a module, its flags defined.

  Launchers share flag names (--root, --data_dir, ...), and one process (a pytest
  worker) may run several: the flags of the other launchers are dropped before one is
  (re)loaded, so whichever ran last can run again.
  """
  if name in sys.modules and _FLAG_NAMES.get(name, {None}) <= set(flags.FLAGS):
    return sys.modules[name]
  for names in _FLAG_NAMES.values():  # every launcher's, this one's too: it is loaded anew
    for flag_name in names & set(flags.FLAGS):
      delattr(flags.FLAGS, flag_name)
  before = set(flags.FLAGS)
  spec = importlib.util.spec_from_file_location(name, LAUNCH_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sys.modules[name] = module
  _FLAG_NAMES[name] = set(flags.FLAGS) - before
  return module
