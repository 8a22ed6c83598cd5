"""Shared pytest setup: graph-mode TF (as Mesh-TF needs), quiet logs, a private vocab cache."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

from brainformer_tf import compat  # pylint: disable=g-import-not-at-top

compat.apply()

import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top

tf.disable_v2_behavior()

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
  """../shared/data next to the checkout; tests that need it skip where it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared datasets not found at {SHARED_DATA} (only in the project workspace)")
  return SHARED_DATA


@pytest.fixture(autouse=True)
def _fresh_gin_config():
  """Each test starts from an empty Gin config: bindings parsed by one test never leak into
  another (mesh-tf layers read their defaults from Gin)."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  yield
  gin.clear_config()
