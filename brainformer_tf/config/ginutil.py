"""Small helpers for parsing and reading the Gin config the way `brainformer train` does."""

import contextlib
import importlib
import logging
import os
from typing import Sequence

import gin
from mesh_tensorflow.transformer import utils
import pkg_resources
from t5.models import mesh_transformer
from t5.models import mesh_transformer_main

from brainformer_tf.config import errors
from brainformer_tf.config import paths


def add_search_paths():
  """Puts t5's gin/ and the project's gin/ on the Gin search path (once)."""
  for path in (os.path.dirname(mesh_transformer_main.__file__) + "/gin", paths.gin_dir()):
    if path not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(path)


@contextlib.contextmanager
def quiet_search_misses():
  """Hides Gin's "Path not found" ERROR log lines: Gin logs every search-path prefix that does
  not hold a file, although the next prefix does (a missing file still raises OSError)."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    root.setLevel(level)


def parse_model_config(gin_files: Sequence[str], gin_params: Sequence[str] = ()):
  """Clears Gin, then parses mesh-tf's defaults.gin, `gin_files` and `gin_params` (unfinalized).

  The same order and deprecated-name skipping as t5_mesh_transformer; errors propagate (OSError
  for a missing file) for the caller to report.
  """
  gin.clear_config()
  add_search_paths()
  with quiet_search_misses():
    gin.parse_config_file(pkg_resources.resource_filename(
        "mesh_tensorflow.transformer", "gin/defaults.gin"))
    gin.parse_config_files_and_bindings(
        list(gin_files), list(gin_params), finalize_config=False,
        skip_unknown=mesh_transformer.DEPRECATED_GIN_REFERENCES)


def query(name, default=None):
  """The value bound to `name` ("configurable.param" or "%MACRO"), or `default` if unbound."""
  try:
    value = gin.query_parameter(name)
  except ValueError:
    return default
  if isinstance(value, gin.config.ConfigurableReference) and value.configurable.name == "macro":
    return query("%" + value.scopes[-1], default)
  return value


def mixture_name():
  """The mixture or task that training reads (MIXTURE_NAME in t5's dataset.gin), or None."""
  return query("mesh_train_dataset_fn.mixture_or_task_name") or query("%MIXTURE_NAME")


def resolve_default_mesh(tpu: str = "", tpu_topology: str = "v2-8"):
  """Binds the mesh when no Gin file did, as t5's MtfModel does; returns a note or None.

  mesh-tf's defaults.gin leaves `utils.run.mesh_shape = @utils.tpu_mesh_shape()`, whose
  `tpu_topology` is REQUIRED. A layout file (gin/layouts/) replaces it. Without one: with
  --tpu, `tpu_topology` comes from the --tpu_topology flag unless Gin binds it; without --tpu
  the model runs on one device (mesh_shape ""), as `MtfModel(tpu=None)` does.
  """
  shape = query("utils.run.mesh_shape")
  if not (isinstance(shape, gin.config.ConfigurableReference) and
          shape.configurable.name == "tpu_mesh_shape"):
    return None
  if tpu:
    if query("utils.tpu_mesh_shape.tpu_topology", gin.REQUIRED) is gin.REQUIRED:
      gin.bind_parameter("utils.tpu_mesh_shape.tpu_topology", tpu_topology)
      return f"no layout file: TPU mesh from --tpu_topology={tpu_topology}"
    return None
  gin.bind_parameter("utils.run.mesh_shape", "")
  return "no layout file and no --tpu: one device (add a layout from gin/layouts/ to split)"


def build_model(model_type: str = "lm", vocab_size: int = 512, mesh_shape="", layout_rules=None):
  """The Gin-configured model (mesh-tf's utils.build_model) with no graph: layer constructors
  only record their settings, so this is cheap and what checks of the built layers read."""
  return utils.build_model(model_type=model_type, input_vocab_size=vocab_size,
                           output_vocab_size=vocab_size, layout_rules=layout_rules,
                           mesh_shape=mesh_shape)


def import_modules(modules: Sequence[str]):
  """Imports --module_import's modules (they register Gin configurables and tasks). A module
  that does not exist is a UsageError naming it; an ImportError raised inside an existing
  module propagates with its traceback (a bug in that module)."""
  for module in modules:
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name and module.startswith(e.name):
        raise errors.UsageError(f"--module_import={module}: no module named {e.name!r}") from None
      raise


def check_gin_files(gin_files: Sequence[str]):
  """Each --gin_file, where it resolves (as Gin will look it up), is a UTF-8 text file: a
  directory (Gin would skip it silently) or undecodable bytes are a UsageError naming the file
  and line. Files not found are left to Gin's own error."""
  add_search_paths()
  prefixes = [""] + list(gin.config._LOCATION_PREFIXES)  # pylint: disable=protected-access
  for name in gin_files or []:
    found = [os.path.join(prefix, name) for prefix in prefixes
             if os.path.exists(os.path.join(prefix, name))]
    if not found:
      continue
    if os.path.isdir(found[0]):
      raise errors.UsageError(f"--gin_file={name} is a directory ({found[0]}); name a .gin file "
                              "in it")
    with open(found[0], "rb") as f:
      raw = f.read()
    try:
      raw.decode("utf-8")
    except UnicodeDecodeError as e:
      line = raw[:e.start].count(b"\n") + 1
      raise errors.UsageError(f"--gin_file={name}: {found[0]}:{line}: not valid UTF-8 "
                              f"({e.reason} at byte {e.start})") from None
