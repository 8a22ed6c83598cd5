"""Metric functions of brainformer_tf tasks: `metric_fn(targets, predictions) -> {name: value}`.

  qa              SQuAD answer normalisation, exact match against any gold answer, F1 with
                  SQuADv2 no-answer handling, LAMBADA last-word accuracy, decode postprocessors
  classification  the official GLUE / SuperGLUE metric of each task (t5's implementations)
"""
