"""Evaluate a checkpoint with mesh-tf's own modes; shared by `brainformer eval` and `finetune`.

Gin, in order: mesh-tf defaults, the checkpoint's operative_config.gin (the model as trained,
by `brainformer train` or `t5_mesh_transformer`), gin/eval/default.gin, the caller's
--gin_file / --gin_param. Then, per mode, `utils.run` runs
  decode  mode "eval" (greedy decoding + the task's metrics), evaluation.decode
  rank    mode "score_from_dataset" (log-likelihood of each label), evaluation.rank
on the checkpoint's step. The format follows utils.run.model_type: "delimited_lm"
(fine-tuned: [inputs EOS targets]) or "lm" (pretrained: the prompt is continued).
Bad input (unknown task, no checkpoint, model/checkpoint mismatch, non-causal expert choice)
raises UsageError before a session runs.
"""

import functools
import os

import gin
from mesh_tensorflow.transformer import utils
import seqio

from brainformer_tf.blocks import causality
from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.evaluation import checkpoint
from brainformer_tf.evaluation import decode
from brainformer_tf.evaluation import rank
from brainformer_tf.evaluation import run_dir
from brainformer_tf.layers.moe import router

MODES = ("decode", "rank")


def parse_gin(config_files, gin_params):
  """Parses mesh-tf defaults then `config_files` and `gin_params` on the project's paths."""
  try:
    ginutil.parse_model_config(config_files, gin_params)
  except OSError as e:
    raise errors.UsageError(str(e)) from None


def model_config(prefix, operative, gin_files):
  """Gin files describing the model of checkpoint `prefix` (its operative config first)."""
  if not operative and not gin_files:
    raise errors.UsageError(f"no {checkpoint.OPERATIVE_CONFIG} next to {prefix}; pass the "
                            "model's --gin_file")
  return ([operative] if operative else []) + list(gin_files)


def get_task(name, split):
  """The registered task or mixture `name`, which must have `split`; else UsageError."""
  try:
    task = seqio.get_mixture_or_task(name)
  except ValueError:
    raise errors.UsageError(f"unknown task or mixture {name!r} (see docs/tasks.md)") from None
  if not any(split in t.splits for t in seqio.get_subtasks(task)):
    raise errors.UsageError(f"task {name!r} has no {split!r} split")
  return task


def check_causal(modes, model_type, vocab_size):
  """UsageError if a layer of the model as built routes with non-causal expert choice (it would
  see the future): a `g[ec]` spec and a BlockDefaults or MoE default count, not only Gin text.
  (Top-2 decodes causally and its scoring-time capacity effect is small: allowed.)"""
  if not modes:
    return
  bad = causality.layers_routing_by(ginutil.build_model(model_type, vocab_size),
                                    router.NON_CAUSAL_GATINGS)
  if bad:
    raise errors.UsageError(
        f"{bad[0]} of the model routes with non-causal expert choice ({len(bad)} such "
        "layer(s)): scoring and decoding would use future tokens; use a *_causal_* model "
        "file, or fine-tune it with "
        "--gin_param=\"blocks.BlockDefaults.gating='expert_choice_causal'\" first "
        "(docs/finetune_eval.md)")


def prepare(prefix, step, task_name, modes, split):
  """Checks the parsed config against the task and checkpoint; binds vocabulary and step."""
  task = get_task(task_name, split)
  model_type = ginutil.query("utils.run.model_type", "bitransformer")
  if model_type not in ("lm", "delimited_lm"):
    raise errors.UsageError(f"utils.run.model_type={model_type!r}: only decoder-only models "
                            "('lm', 'delimited_lm') are evaluated")
  vocabulary = task.output_features["targets"].vocabulary
  check_causal(modes, model_type, vocabulary.vocab_size)
  checkpoint.check_compatible(prefix, model_type, vocabulary.vocab_size,
                              allow_missing=checkpoint.LEARNED_IN_FINETUNE)
  gin.bind_parameter("utils.run.vocabulary", vocabulary)
  gin.bind_parameter("utils.run.eval_checkpoint_step", step)
  gin.bind_parameter("utils.run.dataset_split", split)
  gin.bind_parameter("utils.get_variable_dtype.slice_dtype", "float32")
  gin.bind_parameter("utils.get_variable_dtype.activation_dtype", "float32")
  return model_type


def run_mode(mode, model_dir, task_name, model_type, out_dir, num_examples):
  """Runs one mode with mesh-tf's `utils.run`; returns {task: {"metrics", "records"}}."""
  continue_prompt = model_type == "lm"
  lengths = dict(ginutil.query("utils.run.sequence_length"))
  if mode == "decode":
    gin.parse_config(["utils.run.mode = 'eval'",
                      "utils.run.eval_dataset_fn = @decode.eval_dataset_fn"])
    gin.bind_parameter("utils.run.eval_summary_dir", os.path.join(out_dir, "decode"))
    # mesh-tf pads the prompt by `targets` positions; stop there rather than at the row's end
    gin.bind_parameter("Unitransformer.sample_autoregressive.max_steps", lengths["targets"])
    fn, module = "decode.eval_dataset_fn", decode
  else:
    gin.parse_config(["utils.run.mode = 'score_from_dataset'",
                      "score_from_dataset.score_dataset_fn = @rank.score_dataset_fn",
                      "score_from_dataset.score_with_estimator_fn = @rank.score_with_estimator",
                      "score_from_dataset.score_postprocess_fn = @rank.keep_scores"])
    if continue_prompt:  # one sequence holds prompt and candidate
      lengths = {"inputs": lengths["inputs"], "targets": lengths["inputs"] + lengths["targets"]}
    fn, module = "rank.score_dataset_fn", rank
  gin.bind_parameter("utils.run.sequence_length", lengths)
  gin.bind_parameter(f"{fn}.mixture_or_task_name", task_name)
  gin.bind_parameter(f"{fn}.num_eval_examples", num_examples)
  gin.bind_parameter(f"{fn}.continue_prompt", continue_prompt)
  predict_fn = None if mode == "decode" else functools.partial(
      rank.score_fn, delimited=model_type == "delimited_lm")
  utils.run(tpu_job_name=None, tpu=None, gcp_project=None, tpu_zone=None, model_dir=model_dir,
            predict_fn=predict_fn)
  return module.results()


def evaluate(checkpoint_path, task_names, modes, out_dir, gin_files=(), gin_params=(),
             split="validation", num_examples=-1):
  """Evaluates `checkpoint_path` on every task; writes the run dir; returns the scores."""
  bad = [m for m in modes if m not in MODES]
  if bad or not modes:
    raise errors.UsageError(f"--modes {','.join(modes)}: choose from {', '.join(MODES)}")
  prefix, step, operative = checkpoint.resolve(checkpoint_path)
  files = model_config(prefix, operative, gin_files)
  scores = {}
  for task_name in task_names:
    parse_gin(files[:1] + ["eval/default.gin"] + files[1:], gin_params)
    model_type = prepare(prefix, step, task_name, modes, split)
    for mode in modes:
      for task, result in run_mode(mode, os.path.dirname(prefix), task_name, model_type,
                                   out_dir, num_examples).items():
        scores.setdefault(task, {})[mode] = result["metrics"]
        run_dir.write_predictions(out_dir, task, mode, result["records"])
    run_dir.write_config(out_dir, task_name, gin.operative_config_str())
  run_dir.write_scores(out_dir, {"checkpoint": prefix, "step": step, "split": split,
                                 "num_examples": num_examples, "scores": scores})
  return scores
