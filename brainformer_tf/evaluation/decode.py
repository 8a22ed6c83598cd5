"""Greedy decoding through mesh-tf's `eval` mode, recording every example.

`utils.run.eval_dataset_fn = @decode.eval_dataset_fn` (set by evaluation.driver) returns
t5's `mesh_eval_dataset_fn` datasets with the task's postprocessor and metric functions
wrapped so that the raw decode, the postprocessed prediction and target and the metric values
are kept for `results()`; mesh-tf's `eval_model` does the decoding (Unitransformer
`sample_autoregressive`, temperature 0 = greedy) and the metric calls.

continue_prompt (pretrained LMs, model_type "lm"): the EOS that the tasks append to the
inputs is removed, so the model continues the prompt ("...\\nA:") instead of starting a new
document. A fine-tuned delimited_lm model keeps it: [inputs EOS] is what it was trained on.
"""

import collections
import functools

import gin
from mesh_tensorflow.transformer import dataset as transformer_dataset
from t5.models import mesh_transformer
import tensorflow.compat.v1 as tf

EOS = 1
_RECORDS = collections.defaultdict(lambda: {"targets": [], "predictions": [], "metrics": {}})


def strip_inputs_eos(example):
  """The example with EOS tokens in "inputs" replaced by padding (the prompt then ends open)."""
  example = dict(example)
  inputs = example["inputs"]
  example["inputs"] = tf.where(tf.equal(inputs, EOS), tf.zeros_like(inputs), inputs)
  return example


def _text(x):
  return x.decode("utf-8") if isinstance(x, bytes) else x


def _recording_postprocess(name, postprocess_fn):
  def postprocess(output, example=None, is_target=False):
    value = postprocess_fn(output, example=example, is_target=is_target) if postprocess_fn \
        else output
    if is_target:
      _RECORDS[name]["targets"].append(value)
    else:
      _RECORDS[name]["predictions"].append(
          {"inputs": _text(example["inputs_pretokenized"]), "decode": _text(output),
           "prediction": value})
    return value
  return postprocess


def _recording_metric(name, metric_fn):
  def metric(targets, predictions):
    values = metric_fn(targets, predictions)
    _RECORDS[name]["metrics"].update({k: float(v) for k, v in values.items()})
    return values
  return metric


def _stripped(dataset_fn, **kwargs):
  return dataset_fn(**kwargs).map(strip_inputs_eos)


@gin.configurable(module="decode")
def eval_dataset_fn(sequence_length, vocabulary, dataset_split,
                    mixture_or_task_name=gin.REQUIRED, num_eval_examples=-1,
                    continue_prompt=False):
  """mesh-tf `eval_dataset_fn`: t5's eval datasets, recorded (see module doc)."""
  _RECORDS.clear()
  out = []
  for ds in mesh_transformer.mesh_eval_dataset_fn(
      mixture_or_task_name, sequence_length, dataset_split, vocabulary,
      num_eval_examples=num_eval_examples):
    dataset_fn = functools.partial(_stripped, ds.dataset_fn) if continue_prompt \
        else ds.dataset_fn
    out.append(transformer_dataset.EvalDataset(
        ds.name, dataset_fn, _recording_postprocess(ds.name, ds.postprocess_fn),
        [_recording_metric(ds.name, f) for f in ds.metric_fns]))
  return out


def results():
  """{task: {"metrics", "records"}} of the last decode run; records pair gold and decode."""
  out = {}
  for name, rec in _RECORDS.items():
    records = [dict(index=i, target=t, **p)
               for i, (t, p) in enumerate(zip(rec["targets"], rec["predictions"]))]
    out[name] = {"metrics": dict(rec["metrics"]), "records": records}
  return out
