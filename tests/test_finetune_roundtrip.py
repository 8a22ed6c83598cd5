"""Tiny end-to-end round trip: pretrain -> `brainformer finetune` (CB) -> rank + decode, checked
against mesh-tf's own `score_from_strings` log-likelihoods; `brainformer eval` bad input."""

import json
import os
import pathlib

import numpy as np
import pytest

import harness

# end to end: fine-tune, eval and mesh-tf scoring subprocesses (pretraining: conftest's shared run)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TASK = "super_glue_cb_local"
NO_DROPS = "--gin_param=MoE.capacity_factor=8.0"  # = experts of glam_tiny


def _run(args, cwd, env):
  proc = harness.brainformer(*args, cwd=cwd, env=env, timeout=None)
  if proc.returncode:
    raise AssertionError(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _jsonl(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def finetuned(shared_data, glam_tiny_run, tmp_path_factory):
  """`brainformer finetune` on CB from the shared 40-step GLaM tiny run (conftest), 3 steps."""
  root = tmp_path_factory.mktemp("ft")
  env = dict(os.environ, BRAINFORMER_DATA_DIR=str(shared_data))
  _run(["finetune", f"--init_checkpoint={glam_tiny_run[0]}", f"--task={TASK}",
        f"--model_dir={root}/cb", "--steps=3", "--num_eval_examples=6"], root, env)
  return root, env


def test_finetune_writes_scores_predictions_and_config(finetuned, glam_tiny_run):
  root, _ = finetuned
  out = root / "cb" / "eval"
  scores = json.loads((out / "scores.json").read_text())
  assert scores["step"] == 43 and scores["checkpoint"].endswith("model.ckpt-43")  # 40 + 3
  for mode in ("rank", "decode"):
    metrics = scores["scores"][TASK][mode]
    assert set(metrics) == {"accuracy", "mean_3class_f1"}
    assert all(0 <= v <= 100 for v in metrics.values())
    assert len(_jsonl(out / f"{TASK}.{mode}.predictions.jsonl")) == 6
  # Gin wraps a long value onto the next line, after a backslash
  operative = (root / "cb" / "operative_config.gin").read_text().replace("\\\n    ", "")
  assert f"init_checkpoint = '{glam_tiny_run[0]}/model.ckpt-40'" in operative
  assert "loss_on_targets_only = True" in operative
  assert "model_type = 'delimited_lm'" in (out / f"operative_config.{TASK}.gin").read_text()
  assert "| CB | Avg |" in (out / "results.md").read_text()


def test_rank_matches_mesh_tf_score_from_strings(finetuned):
  """Independent reference: mesh-tf tokenises the strings itself (encode_delimited_lm).

  Capacity factor 8 = experts: no top-2 assignment is dropped, so routing (and the scores) do
  not depend on which other rows share a batch.
  """
  root, env = finetuned
  batch = "--gin_param=utils.run.batch_size=('sequences_per_batch', 3)"
  _run(["eval", f"--checkpoint={root}/cb", f"--task={TASK}", f"--output_dir={root}/rank3",
        "--modes=rank,decode", "--num_examples=5", batch, NO_DROPS], root, env)  # < 256 tokens
  records = _jsonl(root / "rank3" / f"{TASK}.rank.predictions.jsonl")
  inputs = [r["inputs"] for r in records for _ in r["candidates"]]
  targets = [c for r in records for c in r["candidates"]]
  (root / "ref.inputs").write_text("\n".join(inputs) + "\n")
  (root / "ref.targets").write_text("\n".join(targets) + "\n")
  _run(["train", f"--model_dir={root}/cb", f"--gin_file={root}/cb/operative_config.gin",
        "--gin_param=utils.run.mode='score_from_strings'",
        "--gin_param=utils.run.eval_checkpoint_step=43", batch, NO_DROPS,
        f"--gin_param=score_from_strings.inputs='{root}/ref.inputs'",
        f"--gin_param=score_from_strings.targets='{root}/ref.targets'",
        "--gin_param=score_from_strings.score_postprocess_fn=@utils.save_scores",
        f"--gin_param=save_scores.scores_filename='{root}/ref'",
        "--gin_param=save_scores.save_example_text=False",
        f"--gin_param=score_with_estimator.num_examples={len(targets)}"], root, env)
  reference = np.loadtxt(root / "ref.scores").reshape(len(records), -1)
  assert (reference < 0).all()
  ours = np.array([r["log_likelihoods"] for r in records])
  np.testing.assert_allclose(ours, reference, atol=2e-3)
  assert [r["prediction"] for r in records] == [
      r["candidates"][i] for r, i in zip(records, reference.argmax(axis=1))]


def test_top2_decode_with_batch_one(finetuned):
  """Greedy decoding of the top-2 model one example at a time gives the batched decodes
  (without capacity drops; with them top-2 depends on the batch, docs/moe.md)."""
  root, env = finetuned
  _run(["eval", f"--checkpoint={root}/cb", f"--task={TASK}", f"--output_dir={root}/b1",
        "--num_examples=3", "--gin_param=utils.run.batch_size=('sequences_per_batch', 1)",
        NO_DROPS], root, env)
  batch1 = _jsonl(root / "b1" / f"{TASK}.decode.predictions.jsonl")
  batched = _jsonl(root / "rank3" / f"{TASK}.decode.predictions.jsonl")[:3]
  assert [r["decode"] for r in batch1] == [r["decode"] for r in batched]


def test_bad_input_is_one_line_exit_2(finetuned, tmp_path, monkeypatch, capfd):
  """In this process (`brainformer eval` is an argparse command; test_bad_inputs.py runs the
  real process for the others)."""
  root, env = finetuned
  monkeypatch.setenv("BRAINFORMER_DATA_DIR", env["BRAINFORMER_DATA_DIR"])
  (tmp_path / "empty").mkdir()
  cases = [
      (["--checkpoint=" + str(root / "cb"), "--task=no_such_task"], "unknown task"),
      (["--checkpoint=" + str(tmp_path / "empty"), f"--task={TASK}"], "holds no checkpoint"),
      (["--checkpoint=" + str(root / "cb"), f"--task={TASK}",
        "--gin_file=models/dense_tiny.gin"], "model does not match checkpoint"),
      (["--checkpoint=" + str(root / "cb"), f"--task={TASK}",
        "--gin_file=models/glam_ec_tiny.gin"], "routes with non-causal expert choice"),
  ]
  for args, message in cases:
    code, stderr = harness.brainformer_in_process(["eval", f"--output_dir={tmp_path}/o"] + args,
                                                  capfd)
    errors = [l for l in stderr.splitlines() if l.startswith("brainformer eval: error")]
    assert code == 2 and len(errors) == 1 and message in errors[0], stderr[-2000:]
