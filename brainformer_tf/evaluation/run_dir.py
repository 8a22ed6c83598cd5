"""What an evaluation run leaves in its directory.

  scores.json                       {"checkpoint", "step", "split", "num_examples",
                                     "scores": {task: {mode: {metric: value}}}}
  <task>.<mode>.predictions.jsonl   one JSON object per example (inputs, target, prediction, ...)
  operative_config.<task>.gin       the Gin config that produced them
  decode/                           mesh-tf eval_model's own text dumps and TensorBoard events
"""

import json
import os

SCORES = "scores.json"


def _json_default(value):
  if hasattr(value, "tolist"):  # numpy arrays and scalars (a 0-d array's tolist is a scalar)
    return value.tolist()
  return str(value)


def write_predictions(out_dir, task, mode, records):
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{task}.{mode}.predictions.jsonl"), "w") as f:
    for record in records:
      f.write(json.dumps(record, default=_json_default, ensure_ascii=False) + "\n")


def write_config(out_dir, task, config_str):
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"operative_config.{task}.gin"), "w") as f:
    f.write(config_str)


def write_scores(out_dir, payload):
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, SCORES), "w") as f:
    json.dump(payload, f, indent=1, default=_json_default)
    f.write("\n")


def read_scores(out_dir):
  with open(os.path.join(out_dir, SCORES)) as f:
    return json.load(f)
