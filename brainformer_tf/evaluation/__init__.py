"""Metric functions of brainformer_tf tasks: `metric_fn(targets, predictions) -> {name: value}`.

  qa              SQuAD answer normalisation, exact match against any gold answer, F1 with
                  SQuADv2 no-answer handling, LAMBADA last-word accuracy, decode postprocessors
  classification  the official GLUE / SuperGLUE metric of each task (t5's implementations)
Running them on a checkpoint (docs/finetune_eval.md): driver (Gin + mesh-tf modes), decode
(greedy, mode "eval"), rank (label log-likelihoods, mode "score_from_dataset"), checkpoint
(resolve + model/checkpoint variable check), run_dir (scores.json, JSONL), tables (paper layout).
"""
