"""User-facing errors: one clear line on stderr and a non-zero exit, no traceback wall.

Below cli/ so that evaluation, training and config code raise UsageError without importing the
command-line layer; cli/ reports them (`report`, exit code 2).
"""

import errno
import re
import sys
from typing import Optional


class UsageError(Exception):
  """Bad input detected before expensive work started; the message says what and where."""


def report(prefix: str, error: BaseException) -> int:
  """Prints `<prefix>: error: <message>` to stderr and returns exit code 2. Gin's
  "In call to configurable ..." lines (added to any error raised inside a configurable) are
  left out: the message itself names the cause."""
  lines = [l for l in str(error).splitlines() if not l.strip().startswith("In call to configurable")]
  print(f"{prefix}: error: " + "\n".join(lines), file=sys.stderr, flush=True)
  return 2


NO_SPACE = "No space left on device"


def no_space_left(error: BaseException) -> Optional[str]:
  """"no space left on device: <path>" when `error` is a full disk (an OSError with ENOSPC, or a
  TensorFlow error whose message says so, e.g. a checkpoint's SaveV2), else None."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return "no space left on device" + (f": {error.filename}" if error.filename else "")
  match = re.search(r"(\S+?)(?:\.tempstate\d+)?; " + NO_SPACE, str(error))
  if match:
    return f"no space left on device: {match.group(1)}"
  return "no space left on device" if NO_SPACE in str(error) else None
