"""Bad input through the real commands (issue #17): exit code 2, the message naming the flag or
Gin parameter, no traceback, and the files already there untouched. In-process tests of the
same checks: test_preflight.py, test_validate.py."""

import os
import subprocess
import sys

import pytest
import sentencepiece

import harness

GLAM = ["--gin_file=models/glam_tiny.gin", "--gin_file=train/cpu.gin"]


def _tree(path):
  """{relative path: (size, mtime)} of everything under `path`."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      out[os.path.relpath(full, path)] = (os.path.getsize(full), os.path.getmtime(full))
  return out


def _cases(tmp):
  text = tmp / "train.txt"
  text.write_text("A short paragraph of training text, repeated.\n\n" * 30)
  return {
      "model dir under a file": (
          ["train", f"--model_dir={tmp}/a_file/run"] + GLAM, "a_file is a file, not a directory"),
      "no model dir": (["train"] + GLAM, "--model_dir is required"),
      "gin file is a directory": (
          ["train", f"--model_dir={tmp}/m", "--gin_file=layouts"] + GLAM,
          "--gin_file=layouts is a directory"),
      # with an unknown task too: the device check comes before reading any data
      "layout for devices this machine lacks": (
          ["train", f"--model_dir={tmp}/m", "--gin_file=layouts/gpu_8.gin"] + GLAM +
          ["--gin_param=MIXTURE_NAME = 'no_such_task'"],
          "mesh_devices lists 'gpu:0', which this machine does not have"),
      "missing module": (
          ["train", f"--model_dir={tmp}/m", "--module_import=no_such_module"] + GLAM,
          "--module_import=no_such_module: no module named 'no_such_module'"),
      "missing validation file": (
          ["train", f"--model_dir={tmp}/m"] + GLAM + [
              "--gin_param=MIXTURE_NAME = 'local_text_lm'",
              f"--gin_param=local_text_files.train = ['{text}']",
              f"--gin_param=vocabulary_settings.train_files = ['{text}']",
              f"--gin_param=local_text_files.validation = ['{tmp}/missing.txt']"],
          "local_text_files.validation: no file matches"),
      "eval output dir under a file": (
          ["eval", f"--checkpoint={tmp}/none", "--task=default_corpus_lm",
           f"--output_dir={tmp}/a_file/eval"], "--output_dir="),
      "search dir under a file": (
          ["search", f"--dir={tmp}/a_file/search", "--trials=1"], "--dir="),
      "unknown layout": (
          ["params", "--gin_file=models/glam_tiny.gin", "--mesh=no_such_layout"],
          "the layouts are cpu_1, cpu_2x2"),
      "zero heads": (
          ["params", "--gin_file=models/glam_tiny.gin", "--gin_param=num_heads = 0"],
          "num_heads = 0 (Gin num_heads or SelfAttention.num_heads): must be a positive integer"),
      "Gin syntax error": (
          ["params", "--gin_file=models/glam_tiny.gin", "--gin_param=d_model = "], "gin: "),
      "capacity factor not a number": (
          ["validate"] + GLAM + ["--gin_param=MoE.capacity_factor = 'abc'"],
          "MoE.capacity_factor='abc': must be a number"),
  }


NAMES = ["model dir under a file", "no model dir", "gin file is a directory",
         "layout for devices this machine lacks", "missing module", "missing validation file",
         "eval output dir under a file", "search dir under a file", "unknown layout",
         "zero heads", "Gin syntax error", "capacity factor not a number"]


# The argparse commands' cases run `main()` in this process (fast tier; their process path is
# test_a_successful_command_prints_no_tf_noise's); train and validate (absl flags, parsed once
# per process) run in new processes (harness.brainformer).
IN_PROCESS = ("eval output dir under a file", "search dir under a file", "unknown layout",
              "zero heads", "Gin syntax error")


@pytest.mark.parametrize("name", [
    n if n in IN_PROCESS else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_bad_input_is_named_with_exit_2_and_nothing_written(name, tmp_path, monkeypatch, capfd):
  (tmp_path / "a_file").write_text("keep me")
  argv, expected = _cases(tmp_path)[name]
  before = _tree(tmp_path)
  if name not in IN_PROCESS:
    proc = harness.brainformer(*argv, cwd=tmp_path)
    code, stderr = proc.returncode, proc.stderr
  else:
    monkeypatch.chdir(tmp_path)
    code, stderr = harness.brainformer_in_process(argv, capfd)
  assert code == 2, stderr[-2000:]
  assert "Traceback" not in stderr
  errors = [l for l in stderr.splitlines() if ": error: " in l]
  assert len(errors) == 1, stderr[-2000:]
  assert expected in stderr
  assert _tree(tmp_path) == before


@pytest.mark.slow
def test_vocab_reports_the_pieces_it_wrote(tmp_path):
  """hard_vocab_limit=False: a small text gives fewer pieces than asked; the count printed is
  the file's (SentencePiece's own processor, read back)."""
  text = tmp_path / "t.txt"
  text.write_text("the cat sat on the mat and the dog sat on the log.\n\n" * 20)
  proc = subprocess.run([sys.executable, "-m", "brainformer_tf.cli.main", "vocab", str(text),
                         f"--output={tmp_path}/v.model", "--vocab_size=100000"],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  pieces = sentencepiece.SentencePieceProcessor(model_file=f"{tmp_path}/v.model").get_piece_size()
  assert pieces < 100000
  assert f"({pieces} pieces: the text supports no more than that (asked for 100000" in proc.stdout


@pytest.mark.slow
def test_a_successful_command_prints_no_tf_noise():
  """Issue #17 item 7: with nothing set in the environment, `brainformer params` (which imports
  TF and builds a graph) prints no CUDA-plugin registration errors, no TF deprecation notices
  and no log line twice (TF's handler and absl's used to both print each warning)."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  proc = subprocess.run([sys.executable, "-m", "brainformer_tf.cli.main", "params",
                         "--gin_file=models/glam_tiny.gin"],
                        capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "activated" in proc.stdout
  for noise in ("Unable to register", "Instructions for updating", "is deprecated",
                "TF-TRT Warning"):
    assert noise not in proc.stderr, proc.stderr[-2000:]
  messages = [line.split("] ", 1)[-1].split(":", 2)[-1] for line in proc.stderr.splitlines()]
  variables = [m for m in messages if "glorot_uniform_initializer for variable" in m]
  assert len(variables) == len(set(variables)) > 0
