"""Every command the docs tell a user to run still runs: a doc that drifts from the code fails.

Commands are read from README.md and docs/*.md: lines of fenced and indented code blocks, and
inline code spans with arguments, that start with `brainformer`, `.venv/bin/brainformer`,
`python -m benchmarks`, `.venv/bin/python -m benchmarks` or `bash scripts/` (backslash
continuations joined, `cd <dir> &&` dropped, `a && b` split). Each runs in a reduced form,
in this process unless noted:

  brainformer train / validate     `brainformer validate` with the same flags (--tpu commands
                                   included: nothing is compared with local devices)
  brainformer params / --help      as written
  brainformer finetune/eval/search/vocab   the command's own argument parsing (they need a
                                   checkpoint, data or minutes), and the tasks they name exist
  python -m benchmarks.<name>      the benchmark's argument parsing (no benchmark is run)
  bash scripts/<name>.sh           `bash -n`; the slow tests run setup_env.sh (a no-op on the
                                   installed venv) and quickstart.sh for a few steps

Placeholders ($TPU, gs://..., <g>, files..., optional [--flags]) are filled in by PLACEHOLDERS;
model dirs go to a temporary directory. Commands that cannot run here are in SKIPPED with the
reason, the few that run in the slow tier only in SLOW; an entry of either that matches no
documented command fails, so the tables cannot go stale.
"""

import argparse
import contextlib
import dataclasses
import importlib
import pathlib
import re
import shlex
import subprocess
import sys
from typing import List

from absl import flags
import gin
import pytest
import seqio
from t5.models import mesh_transformer_main  # pylint: disable=unused-import  (defines the flags)

from brainformer_tf.cli import main
from brainformer_tf.cli import validate
import tasks  # pylint: disable=unused-import  (registers the tasks the commands name)

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
PREFIX = r"(\.venv/bin/)?(brainformer\b|python -m benchmarks\.|bash scripts/)"
# an inline span is a command (not a mention like `brainformer train`) when it has arguments
INLINE = (r"(cd \S+ && )?(\.venv/bin/)?(brainformer (--help|\S+ \S+)|python -m benchmarks\.\S+|"
          r"bash scripts/\S+)")
PLACEHOLDERS = {"$TPU": "doc-tpu", "$ZONE": "us-central2-b", "$PROJECT": "doc-project",
                "$BUCKET": "doc-bucket", "$HOME": "{tmp}", "<g>": "expert_choice_causal",
                "files...": "{tmp}/corpus.txt", "--dir=D": "--dir={tmp}/search"}
# regex on the command as documented -> why it is not run
SKIPPED = {
    r"python -m pytest": "the test suite itself (this test is part of it)",
    r"^brainformer params --mesh$": "names the flag in prose, not a command",
    r"--mesh=<layout \| mesh string>": "synopsis with a placeholder; the layout form runs "
                                       "from docs/scaleout.md",
    r"^brainformer validate --gin_file=\.\.\.": "synopsis: which files and params is the "
                                                 "reader's choice",
    r"--gin_file=<dir>/top/": "<dir> is a finished search's output directory",
}
# regex on the command as documented -> why it runs in the slow tier only
SLOW = {
    r"^brainformer params --paper": "counts every paper row at full size (tests/test_accounting.py "
                                    "checks each row in the fast tier)",
}


@dataclasses.dataclass(frozen=True)
class DocCommand:
  where: str   # file:line
  text: str    # as documented (whitespace normalised)

  def __str__(self):
    return f"{self.where}: {self.text}"


def _split(where, text):
  text = re.sub(r"^cd \S+ && ", "", " ".join(text.split()))
  return [DocCommand(where, part.strip()) for part in text.split("&&")]


def _line_of(text, offset):
  return text.count("\n", 0, offset) + 1


def extract(path) -> List[DocCommand]:
  """The commands of one Markdown file (module doc), in order."""
  text, name = path.read_text(), path.relative_to(REPO)
  found, lines, in_fence = [], text.splitlines(), False
  number = 0
  while number < len(lines):
    line = lines[number]
    number += 1
    if line.lstrip().startswith("```"):
      in_fence = not in_fence
      continue
    code = line.strip() if in_fence else (line[4:].strip() if line.startswith("    ") else "")
    if not re.match(PREFIX, code):
      continue
    start = number
    while code.endswith("\\") and number < len(lines):
      code = code[:-1] + " " + lines[number].strip()
      number += 1
    found += _split(f"{name}:{start}", code)
  prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
  for span in re.finditer(r"`([^`]+)`", prose):
    code = " ".join(span.group(1).split())
    if re.match(INLINE, code):
      found += _split(f"{name}:{_line_of(prose, span.start())}", code)
  return found


COMMANDS = [c for path in DOCS for c in extract(path)]


def skip_reason(command):
  return next((why for pattern, why in SKIPPED.items() if re.search(pattern, command.text)),
              None)


def tokens(command, tmp_path):
  """The command's arguments with placeholders filled in and model dirs in tmp_path."""
  text = command.text
  for placeholder, value in PLACEHOLDERS.items():
    text = text.replace(placeholder, value.format(tmp=tmp_path))
  args = []
  for token in shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", text), comments=True):  # [--x] kept
    if "..." in token and not token.startswith("--model_dir="):
      continue   # a `--gin_param=...` placeholder
    if token.startswith("--model_dir="):
      token = f"--model_dir={tmp_path}/model_dir"
    args.append(token)
  if args[0].startswith(".venv/bin/"):
    args[0] = args[0][len(".venv/bin/"):]
  return args


class _Parsed(Exception):
  """Raised by parse_only() once a command's arguments parsed."""

  def __init__(self, namespace):
    super().__init__()
    self.namespace = namespace


@contextlib.contextmanager
def parse_only():
  """argparse parses as usual, then stops the command (raises _Parsed) before it does work."""
  original = argparse.ArgumentParser.parse_args

  def parse_args(self, args=None, namespace=None):
    raise _Parsed(original(self, args, namespace))

  argparse.ArgumentParser.parse_args = parse_args
  try:
    yield
  finally:
    argparse.ArgumentParser.parse_args = original


def parsed_arguments(run, argv):
  """The argparse namespace `run(argv)` parses, without running the command."""
  with parse_only():
    try:
      run(argv)
    except _Parsed as parsed:
      return parsed.namespace
  raise AssertionError(f"{argv}: no argparse parser was called")


def run_validate(args):
  """`brainformer validate` with the given flags, in this process: its exit code."""
  flags.FLAGS.unparse_flags()
  try:
    validate._parse_flags(["brainformer validate"] + args)  # pylint: disable=protected-access
    return validate._main(None)  # pylint: disable=protected-access
  finally:
    flags.FLAGS.unparse_flags()
    gin.clear_config()


def check_tasks(names):
  for name in names:
    seqio.get_mixture_or_task(name)   # ValueError names an unknown task


def run_brainformer(args):
  command = args[1] if len(args) > 1 else ""
  if command in ("train", "validate"):
    return run_validate(args[2:])
  if command in ("params", "--help"):
    return main.main(args)
  module = importlib.import_module(main.COMMANDS[command][0])
  namespace = parsed_arguments(module.run, [f"brainformer {command}"] + args[2:])
  if command == "finetune":
    check_tasks([namespace.task])
  if command == "eval":
    check_tasks(module.tasks_of(namespace.task))
  return 0


def run_benchmark(args):
  module = importlib.import_module(args[2])
  argv = sys.argv
  sys.argv = [f"python -m {args[2]}"] + args[3:]
  try:
    parsed_arguments(lambda _: module.main(), None)
  finally:
    sys.argv = argv
  return 0


def run_script(args):
  result = subprocess.run(["bash", "-n", args[1]], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  if args[1] == "scripts/demo.sh":   # its arguments go to benchmarks.demo
    return run_benchmark(["python", "-m", "benchmarks.demo"] + args[2:])
  return 0


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=pytest.mark.slow) if any(re.search(p, c.text) for p in SLOW) else c
    for c in COMMANDS], ids=str)
def test_documented_command_runs(command, tmp_path, capsys):
  reason = skip_reason(command)
  if reason:
    pytest.skip(reason)
  args = tokens(command, tmp_path)
  runner = {"brainformer": run_brainformer, "python": run_benchmark, "bash": run_script}
  assert args[0] in runner, f"{command}: no reduced form for {args[0]!r}"
  code = runner[args[0]](args)
  out = capsys.readouterr()
  assert code == 0, f"{command}\n{out.out[-2000:]}\n{out.err[-2000:]}"


def test_the_docs_commands_are_found():
  texts = [c.text for c in COMMANDS]
  assert "bash scripts/demo.sh" in texts and "bash scripts/quickstart.sh" in texts
  assert any(t.startswith(".venv/bin/brainformer train --model_dir=runs/glam_tiny") for t in texts)
  assert any("--tpu=$TPU" in t and "layouts/tpu_v4_512.gin" in t for t in texts)
  assert sum(t.startswith("python -m benchmarks.") for t in texts) >= 4
  assert len(COMMANDS) >= 25


def test_no_stale_skip_entry():
  for pattern in list(SKIPPED) + list(SLOW):
    assert any(re.search(pattern, c.text) for c in COMMANDS), pattern


def _installed_venv_is_current():
  """setup_env.sh's own stamp test (its `want=$(...)` line, run as written there): True when
  it would return at once for this venv."""
  stamp = pathlib.Path(sys.prefix) / ".brainformer-requirements"
  script = (REPO / "scripts" / "setup_env.sh").read_text()
  stamp_command = re.search(r"^want=\$\((.*)\)$", script, re.M).group(1)
  want = subprocess.run(stamp_command, shell=True, cwd=REPO, capture_output=True, text=True,
                        check=True).stdout.strip()
  return stamp.exists() and stamp.read_text().strip() == want


def run_script_for_real(args, tmp_path, timeout):
  if not _installed_venv_is_current():
    pytest.skip("the venv's requirements stamp differs: setup_env.sh would install packages")
  env = dict(__import__("os").environ, BRAINFORMER_VENV=sys.prefix, TF_CPP_MIN_LOG_LEVEL="2",
             MODEL_DIR=str(tmp_path / "model"))
  return subprocess.run(["bash"] + args, cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
def test_setup_env_returns_at_once_on_the_installed_venv(tmp_path):
  assert any(c.text == "bash scripts/setup_env.sh" for c in COMMANDS)
  result = run_script_for_real([str(REPO / "scripts/setup_env.sh")], tmp_path, timeout=60)
  assert result.returncode == 0, result.stderr
  assert "installing" not in result.stdout + result.stderr


@pytest.mark.slow
def test_quickstart_script_trains_a_few_steps(tmp_path):
  """README's `bash scripts/quickstart.sh`, reduced with its documented extra arguments."""
  assert any(c.text == "bash scripts/quickstart.sh" for c in COMMANDS)
  result = run_script_for_real(
      [str(REPO / "scripts/quickstart.sh"), "--gin_param=utils.run.train_steps=2",
       "--gin_param=utils.run.save_checkpoints_steps=2",
       "--gin_param=utils.run.batch_size=('sequences_per_batch', 2)",
       "--gin_param=train_with_progress.final_eval_steps=1",
       "--gin_param=train_with_progress.final_leak_free_rows=0"], tmp_path, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "validation log-perplexity at step 2" in result.stdout
  assert (tmp_path / "model" / "model.ckpt-2.index").exists()
