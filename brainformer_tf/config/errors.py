"""User-facing errors: one clear line on stderr and a non-zero exit, no traceback wall.

Below cli/ so that evaluation, training and config code raise UsageError without importing the
command-line layer; cli/ reports them (`report`, exit code 2).
"""

import sys


class UsageError(Exception):
  """Bad input detected before expensive work started; the message says what and where."""


def report(prefix: str, error: BaseException) -> int:
  """Prints `<prefix>: error: <message>` to stderr and returns exit code 2. Gin's
  "In call to configurable ..." lines (added to any error raised inside a configurable) are
  left out: the message itself names the cause."""
  lines = [l for l in str(error).splitlines() if not l.strip().startswith("In call to configurable")]
  print(f"{prefix}: error: " + "\n".join(lines), file=sys.stderr, flush=True)
  return 2
