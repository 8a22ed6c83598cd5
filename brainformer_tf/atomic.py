"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never a
torn one. The data goes to `<path>.<pid>.tmp` (one per writing process, so that two processes
writing the same file do not share a temp file), then os.replace renames it over `path`."""

import json
import os
from typing import Iterable


def _temp(path: str) -> str:
  return f"{path}.{os.getpid()}.tmp"


def write_json(path: str, data, fsync: bool = False):
  """json.dump(data, indent=1) to `path` atomically; fsync: also survive a power cut."""
  with open(_temp(path), "w") as f:
    json.dump(data, f, indent=1)
    if fsync:
      f.flush()
      os.fsync(f.fileno())
  os.replace(_temp(path), path)


def write_lines(path: str, lines: Iterable[str]):
  """The lines (each ending in a newline) to `path` atomically."""
  with open(_temp(path), "w") as f:
    f.writelines(lines)
  os.replace(_temp(path), path)
