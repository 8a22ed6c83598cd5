"""Results tables in the paper's layout (rows = models, columns = tasks), as markdown.

Table 4 (fine-tuning): dev accuracy per task and their average; where a task's official
metric is another (CB F1, CoLA Matthews corr., MRPC/QQP F1, MultiRC F1) the cell is
"accuracy / official". Table 5 (one-shot): EM for NQ/TriviaQA/WebQuestions/SQuAD-open, F1
for SQuADv2, accuracy for LAMBADA. Missing cells are "-".
"""

import numpy as np

# (column, task-name prefix, metric keys: accuracy-like first, then the official one)
TABLE4 = (
    ("BoolQ", "super_glue_boolq", ("accuracy",)),
    ("CB", "super_glue_cb", ("accuracy", "mean_3class_f1")),
    ("CoLA", "glue_cola", ("matthews_corrcoef",)),
    ("COPA", "super_glue_copa", ("accuracy",)),
    ("MNLI", "glue_mnli", ("accuracy",)),
    ("MRPC", "glue_mrpc", ("accuracy", "f1")),
    ("MultiRC", "super_glue_multirc", ("exact_match", "f1")),
    ("QNLI", "glue_qnli", ("accuracy",)),
    ("QQP", "glue_qqp", ("accuracy", "f1")),
    ("RTE", "super_glue_rte", ("accuracy",)),
    ("RTE", "glue_rte", ("accuracy",)),
    ("SST-2", "glue_sst2", ("accuracy",)),
    ("WiC", "super_glue_wic", ("accuracy",)),
    ("WNLI", "glue_wnli", ("accuracy",)),
    ("WSC", "super_glue_wsc", ("accuracy",)),
)
TABLE5 = (
    ("NQ", "nq_open", "exact_match"),
    ("TriviaQA", "trivia_qa", "exact_match"),
    ("WebQuestions", "web_questions", "exact_match"),
    ("SQuADv2", "squad_v2", "f1"),
    ("SQuAD-open", "squad_open", "exact_match"),
    ("LAMBADA", "lambada", "accuracy"),
)


def _task_metrics(scores, prefix):
  for task, metrics in scores.items():
    if task == prefix or task.startswith(prefix + "_"):
      return metrics
  return None


def _markdown(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def table4(runs):
  """runs: {model: {task: {metric: value}}} -> markdown (columns: tasks present, then Avg)."""
  columns = [c for c in TABLE4 if any(_task_metrics(s, c[1]) for s in runs.values())]
  rows = []
  for model, scores in runs.items():
    cells, firsts = [], []
    for _, prefix, keys in columns:
      metrics = _task_metrics(scores, prefix)
      values = [metrics[k] for k in keys if metrics and k in metrics]
      cells.append(" / ".join(f"{v:.1f}" for v in values) or "-")
      if values:
        firsts.append(values[0])
    rows.append([model] + cells + [f"{np.mean(firsts):.1f}" if firsts else "-"])
  return _markdown(["model"] + [c[0] for c in columns] + ["Avg"], rows)


def table5(runs):
  """runs: {model: {task: {metric: value}}} -> markdown (columns: tasks present)."""
  columns = [c for c in TABLE5 if any(_task_metrics(s, c[1]) for s in runs.values())]
  rows = []
  for model, scores in runs.items():
    cells = []
    for _, prefix, key in columns:
      metrics = _task_metrics(scores, prefix) or {}
      cells.append(f"{metrics[key]:.1f}" if key in metrics else "-")
    rows.append([model] + cells)
  return _markdown(["model"] + [f"{c[0]} ({c[2]})" for c in columns], rows)
