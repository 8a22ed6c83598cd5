"""User-facing errors: one clear line on stderr and a non-zero exit, no traceback wall.

Below cli/ so that evaluation, training and config code raise UsageError without importing the
command-line layer; cli/ reports them (`report`, exit code 2).
"""

import sys


class UsageError(Exception):
  """Bad input detected before expensive work started; the message says what and where."""


def report(prefix: str, error: BaseException) -> int:
  print(f"{prefix}: error: {error}", file=sys.stderr, flush=True)
  return 2
