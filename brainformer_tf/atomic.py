"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never a
torn one. The data goes to `<path>.tmp`, then os.replace renames it over `path`."""

import json
import os
from typing import Iterable


def write_json(path: str, data, fsync: bool = False):
  """json.dump(data, indent=1) to `path` atomically; fsync: also survive a power cut."""
  with open(path + ".tmp", "w") as f:
    json.dump(data, f, indent=1)
    if fsync:
      f.flush()
      os.fsync(f.fileno())
  os.replace(path + ".tmp", path)


def write_lines(path: str, lines: Iterable[str]):
  """The lines (each ending in a newline) to `path` atomically."""
  with open(path + ".tmp", "w") as f:
    f.writelines(lines)
  os.replace(path + ".tmp", path)
