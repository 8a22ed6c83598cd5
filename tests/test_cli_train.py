"""`brainformer train` end to end on CPU: train, checkpoint, resume, and bad input."""

import pathlib

import pytest

from brainformer_tf.training import progress
import harness

# end to end: brainformer train processes (the shared run and its resume, 600 s limit each)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1300)]

TINY = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin"]


def checkpoint_steps(model_dir):
  return sorted(int(p.name.split("-")[1].split(".")[0])
                for p in pathlib.Path(model_dir).glob("model.ckpt-*.index"))


@pytest.fixture(scope="module")
def resumed(glam_tiny_run, tmp_path_factory):
  """The shared 40-step run continued to step 50 by the same command (on a copy)."""
  model_dir = harness.copy_of(glam_tiny_run, tmp_path_factory.mktemp("resumed") / "model")
  proc = harness.brainformer("train", f"--model_dir={model_dir}", *harness.GLAM_TINY_RUN,
                             "--gin_param=utils.run.train_steps = 50",
                             "--gin_param=train_with_progress.final_leak_free_rows = 0")
  return model_dir, proc


def test_train_reports_progress_and_validation_and_writes_a_checkpoint(glam_tiny_run):
  model_dir, first = glam_tiny_run   # conftest: `brainformer train`, 40 steps, from `/`
  assert checkpoint_steps(model_dir) == [20, 30, 40]   # every 10 steps, the newest 3 kept
  assert "step 40/40" in first.stderr
  assert "validation log-perplexity at step 40" in first.stdout
  # glam_tiny's capacity-limited top-2 reads its row: the leak-free figure follows, labelled
  assert "(whole-sequence: this model's routing reads later tokens of its row)" in first.stdout
  assert "validation leak-free log-perplexity at step 40:" in first.stdout
  assert "(2 rows, prefix-exact; whole-sequence on the same rows" in first.stdout
  assert f"model dir {model_dir}" in first.stdout
  for name in ("operative_config.gin", "loss_curve.png", "train_log.jsonl"):
    assert (model_dir / name).exists(), name
  assert list(model_dir.glob("events.out.tfevents.*")), "no TensorBoard summaries"


def test_second_invocation_resumes_from_the_checkpoint(resumed):
  model_dir, second = resumed
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resuming from step 40" in second.stdout
  assert checkpoint_steps(model_dir)[-1] == 50
  records = progress.read_log(str(model_dir))
  train_steps = [r["step"] for r in records if "loss" in r]
  assert train_steps == list(range(1, 51)), train_steps   # the curve continues; none redone
  validation_steps = [r["step"] for r in records if "validation_loss" in r]
  assert validation_steps == [40, 50]


def test_unknown_gin_file_is_one_clear_line():
  """Through the installed console script, from `/`, as a user types it."""
  result = harness.brainformer_script("train", "--model_dir=/tmp/unused",
                                      "--gin_file=models/nope.gin", "--gin_file=train/cpu.gin")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert "models/nope.gin" in result.stderr and "models/glam_tiny.gin" in result.stderr


@pytest.mark.parametrize("params,message", [
    (["MIXTURE_NAME='no_such_task'"], "MIXTURE_NAME='no_such_task' is not a registered"),
    (["MIXTURE_NAME='local_text_lm'", "local_text_files.train=['/nonexistent/*.txt']"],
     "no file matches '/nonexistent/*.txt'"),
])
def test_bad_data_settings_are_one_clear_line(tmp_path, params, message):
  result = harness.brainformer("train", f"--model_dir={tmp_path}", *TINY,
                               *[f"--gin_param={p}" for p in params])
  assert result.returncode == 2, result.stderr[-2000:]
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert not list(tmp_path.glob("model.ckpt*")), "work started despite bad input"
  if "no_such_task" in message:  # the error line lists the project's tasks, all families
    line = next(l for l in result.stderr.splitlines() if message in l)
    for task in ("default_corpus_lm", "super_glue_cb_local", "nq_open_oneshot_local"):
      assert task in line


def test_empty_corpus_is_one_clear_line(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n")
  result = harness.brainformer("train", f"--model_dir={tmp_path}/run", *TINY,
                               "--gin_param=MIXTURE_NAME='local_text_lm'",
                               f"--gin_param=local_text_files.train=['{empty}']")
  assert result.returncode == 2
  assert f"text file is empty (no non-blank line): {empty}" in result.stderr
