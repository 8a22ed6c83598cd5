"""Small helpers for reading the parsed Gin config."""

import gin

_MISSING = object()


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
