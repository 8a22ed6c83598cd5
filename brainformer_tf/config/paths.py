"""Where brainformer_tf finds its Gin files and keeps its caches."""

import os
import pathlib

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent   # brainformer_tf/


def gin_dir() -> str:
  """The project's `gin/` folder: the source tree's in a checkout, else the installed copy."""
  for candidate in (_PACKAGE_DIR.parent / "gin", _PACKAGE_DIR / "gin_configs"):
    if candidate.is_dir():
      return str(candidate)
  raise FileNotFoundError(
      f"brainformer_tf's gin/ folder was not found next to {_PACKAGE_DIR}; reinstall the package.")


def gin_files(folder: str) -> list:
  """The .gin files directly in gin/<folder> as Gin names ("models/glam_tiny.gin"), sorted."""
  return sorted(f"{folder}/{f}" for f in os.listdir(os.path.join(gin_dir(), folder))
                if f.endswith(".gin"))


def model_files() -> list:
  """The zoo's top-level model files ("models/glam_tiny.gin", ...)."""
  return gin_files("models")


def cache_dir() -> str:
  """Cache for trained vocabularies: $BRAINFORMER_CACHE_DIR, else ~/.cache/brainformer_tf."""
  path = os.environ.get("BRAINFORMER_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "brainformer_tf")
  os.makedirs(path, exist_ok=True)
  return path
