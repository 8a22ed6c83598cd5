"""Official GLUE / SuperGLUE metrics per task, reusing t5's implementations.

Predictions and targets are class ids (t5's `string_label_to_class_id` postprocessor; an
unparseable prediction becomes -1 and counts as wrong).

  CoLA Matthews corr.; MRPC, QQP F1 + accuracy; SST-2, MNLI, QNLI, RTE, WNLI accuracy;
  BoolQ, COPA, RTE, WiC, WSC accuracy; CB macro-F1 over 3 classes + accuracy; MultiRC F1 over
  all answers + exact match per question; ReCoRD max-over-answers F1/EM;
  AX-b Matthews corr. (its official metric; t5 registers none); AX-g accuracy (the official
  gender-parity score needs the example pairing and is not computed).
"""

from t5.data import glue_utils
from t5.evaluation import metrics as t5_metrics


def matthews_corrcoef(targets, predictions):
  """Matthews correlation (x100), the official CoLA and AX-b metric."""
  return t5_metrics.sklearn_metrics_wrapper(
      "matthews_corrcoef", metric_post_process_fn=lambda x: 100 * x)(targets, predictions)


_OVERRIDES = {
    ("super_glue", "axb"): [matthews_corrcoef],
    ("super_glue", "axg"): [t5_metrics.accuracy],
    ("super_glue", "wsc.fixed"): [t5_metrics.accuracy],
}


def metric_fns(benchmark: str, config: str):
  """The metric functions of `benchmark` ("glue" / "super_glue") task `config` (TFDS name)."""
  if (benchmark, config) in _OVERRIDES:
    return list(_OVERRIDES[(benchmark, config)])
  if benchmark == "glue":
    return list(glue_utils.get_glue_metric(config))
  return list(glue_utils.get_super_glue_metric(config))
