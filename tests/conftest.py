"""Shared pytest setup: the compat shims, graph-mode TF (as Mesh-TF needs), fresh Gin per test.

`import brainformer_tf` installs the mesh-tf compat shims before anything imports mesh-tf (the
venv's import hook does too; this keeps the suite right without it). TF_CPP_MIN_LOG_LEVEL
quiets the TF C++ logs of the subprocesses tests start (they inherit the environment).
"""

import os
import pathlib

import gin
import pytest
import tensorflow.compat.v1 as tf

import brainformer_tf  # pylint: disable=unused-import  (installs the compat shims)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
  gin.clear_config()
  yield
  gin.clear_config()
