"""The one class of error that is the user's to fix.

A `UserError` says what was wrong and what to do (prepare the dataset, use a
multiple of the device count, encode the image, pick a known name, ...).
Every `python -m bcos_jax.*` command prints it as one short message and
exits with code 2, without a traceback (`bcos_jax.cli`); anything else is a
programming error and keeps its traceback.
"""


class UserError(ValueError):
  """Something the user gave (a config, a file, a dataset, an input) is not usable as is.

  The message names the problem and the fix. A ValueError, so code that
  catches bad values keeps working.
  """
