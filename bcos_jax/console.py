"""What a person running a command sees: a few lines, the progress bar, the results.

Libraries (orbax, tfds, grain, JAX) log at INFO; a user wants the config
summary, the devices, the progress bar, one line per evaluation, where the
outputs went and the final metrics. `quiet_libraries` raises the log level
to WARNING unless `--verbosity` / `-v` was given; `say` prints a line for
the person, above the progress bar, whatever the log level.
"""

import sys

import tqdm
from absl import flags, logging


def verbosity_given() -> bool:
  """Whether the command line set absl's --verbosity (-v)."""
  return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present


def quiet_libraries() -> None:
  """Log at WARNING unless the user asked for more with --verbosity / -v."""
  if not verbosity_given():
    logging.set_verbosity(logging.WARNING)


def say(message: str) -> None:
  """One line for the person at the console (stderr, above any progress bar)."""
  tqdm.tqdm.write(message, file=sys.stderr)
