"""Shared pytest setup: the compat shims, graph-mode TF (as Mesh-TF needs), fresh Gin per test,
one shared GLaM tiny training run, and the grouping that `pytest -n 2` (pytest-xdist) needs.

`import brainformer_tf` installs the mesh-tf compat shims before anything imports mesh-tf (the
venv's import hook does too; this keeps the suite right without it). TF_CPP_MIN_LOG_LEVEL
quiets the TF C++ logs of the subprocesses tests start (they inherit the environment).
"""

import collections
import os
import pathlib

import gin
import pytest
import tensorflow.compat.v1 as tf
from xdist import scheduler as xdist_scheduler

import brainformer_tf  # pylint: disable=unused-import  (installs the compat shims)
from harness import brainformer, GLAM_TINY_RUN, GLAM_TINY_RUN_STEPS

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


@pytest.fixture(scope="session")
def glam_tiny_run(tmp_path_factory):
  """(model dir, finished process) of one real 40-step `brainformer train` of GLaM tiny, with
  the final validation and the leak-free scoring of 2 rows. The run costs about a minute, so
  the tests that need a trained model dir, its losses or this command's output share it (the
  glam_tiny_run group below); a test that changes the dir works on
  `harness.copy_of(glam_tiny_run, path)`."""
  model_dir = tmp_path_factory.mktemp("glam_tiny_run") / "model"
  proc = brainformer("train", f"--model_dir={model_dir}", *GLAM_TINY_RUN,
                     f"--gin_param=utils.run.train_steps = {GLAM_TINY_RUN_STEPS}",
                     "--gin_param=train_with_progress.final_leak_free_rows = 2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return model_dir, proc


# Under `pytest -n N --dist loadgroup`, a group's tests run on one worker. Tests of one module
# stay together (their module fixtures are built once); the users of `glam_tiny_run` form one
# group across modules. The heaviest groups (measured with --durations, docs/testing.md) are
# handed out first, so that no long one starts last.
HEAVIEST_FIRST = ["glam_tiny_run", "test_search_vizier", "test_search_end_to_end",
                  "test_config_matrix", "test_generate", "test_scaleout_equivalence",
                  "test_disk_full", "test_decoding", "test_documented_commands",
                  "test_benchmarks", "test_train_lock"]


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook reads the marks into node ids
def pytest_collection_modifyitems(items):
  for item in items:
    if not item.get_closest_marker("xdist_group"):
      group = ("glam_tiny_run" if "glam_tiny_run" in item.fixturenames
               else item.module.__name__)
      item.add_marker(pytest.mark.xdist_group(group))


class HeaviestGroupsFirst(xdist_scheduler.LoadGroupScheduling):
  """xdist's loadgroup scheduling (which queues groups by their number of tests), with the
  groups of HEAVIEST_FIRST at the head of the queue."""

  def _assign_work_unit(self, node):
    rank = {group: i for i, group in enumerate(HEAVIEST_FIRST)}
    self.workqueue = collections.OrderedDict(
        sorted(self.workqueue.items(), key=lambda unit: rank.get(unit[0], len(rank))))
    super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)   # the hook exists where pytest-xdist is loaded
def pytest_xdist_make_scheduler(config, log):
  if config.getvalue("dist") == "loadgroup":
    return HeaviestGroupsFirst(config, log)
  return None
