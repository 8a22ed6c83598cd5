"""One training process per model dir: `<model_dir>/train.lock` holds the owner's pid and host.

Two `brainformer train` runs on one model dir would interleave their checkpoints and logs (each
step logged twice, one run validating the other's checkpoint). The lock is created atomically
(O_EXCL); a lock left by a killed run on this host (its pid no longer running) is taken over,
so a resume after a kill is never blocked. A lock from another host cannot be checked from
here: the message names the file to remove once that run is known to be gone. Remote model
dirs (gs://, ...) are not locked: no atomic create there.
"""

import json
import os
import socket
import time

from brainformer_tf.config import errors

LOCK_FILE = "train.lock"


class ModelDirInUse(errors.UsageError):
  """Another live process trains into the model dir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # exists, owned by someone else
    return True
  return True


def _read(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None   # torn by a kill between create and write: treat as stale


def acquire(model_dir: str) -> str:
  """Takes the lock (returns its path) or raises ModelDirInUse naming the owner."""
  if "://" in model_dir:
    return ""
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, LOCK_FILE)
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      owner = _read(path)
      if owner and owner.get("host") != me["host"]:
        raise ModelDirInUse(
            f"--model_dir={model_dir} is locked by pid {owner.get('pid')} on host "
            f"{owner.get('host')} (since {owner.get('started')}); remove {path} if that run "
            "is gone") from None
      if owner and owner.get("pid") != me["pid"] and _alive(int(owner.get("pid", 0))):
        raise ModelDirInUse(
            f"--model_dir={model_dir} is in use by another training run (pid "
            f"{owner['pid']}, since {owner.get('started')}); wait for it or stop it") from None
      os.remove(path)   # stale: its process is gone (a killed run); take it over
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    return path
  raise ModelDirInUse(f"--model_dir={model_dir}: could not take {path} (another process keeps "
                      "re-creating it)")


def release(path: str):
  """Removes the lock if this process still owns it."""
  if path and (_read(path) or {}).get("pid") == os.getpid():
    os.remove(path)
