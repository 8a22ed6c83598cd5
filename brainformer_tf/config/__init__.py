"""Shared services below the command line: what every command needs before work starts.

  errors    UsageError (bad input: one line, exit code 2) and its reporter
  paths     where the Gin zoo and caches live; the zoo's model files
  ginutil   Gin search paths, parsing as t5_mesh_transformer does, queries, the model build
  checks    every config check that runs before a graph is built (`brainformer validate`)
  prepare   import tasks, parse, check, the task's data: `train`, `validate`, `eval`, ...
"""
