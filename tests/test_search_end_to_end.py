"""A real 2-trial search of the tiny space, killed during a trial and resumed (slow: 3 training
runs).

Every trial is a real `brainformer train` subprocess on the embedded corpus with a 2 s budget;
the kill comes at a fixed point, through the search's fault hook, right after trial 0's
subprocess started (BRAINFORMER_SEARCH_FAULT, search/trial.py).
"""

import json
import os
import re
import signal
import time

import pytest

from brainformer_tf.blocks import spec as spec_lib
from brainformer_tf.search import study as study_lib
import harness

# end to end: two search processes, three training runs
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# Slack wide enough that a 2 s trial on a loaded machine is not early-stopped by timing noise;
# no leak-free scoring pass (a subprocess per MoE trial; the ranking is not under test here).
COMMAND = ["search", "--space=tiny", "--trials=2",
           "--population=2", "--tournament=2", "--budget_s=2", "--references=glam", "--top_k=1",
           "--step_time_slack=3", "--loss_slack=0.5",
           "--gin_param=train_with_progress.final_leak_free_rows = 0"]


def _processes_mentioning(text):
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if text.encode() in f.read():
          found.append(int(pid))
    except OSError:
      continue
  return found


def _wait_for(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.5)
  raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_search_is_killed_during_a_trial_and_resumes_without_loss_or_repeat(tmp_path):
  search_dir = str(tmp_path / "search")
  cmd = COMMAND + [f"--dir={search_dir}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  first = harness.brainformer(*cmd, stderr_to_stdout=True, timeout=600,
                              env=dict(env, BRAINFORMER_SEARCH_FAULT="kill_after_start:trial_0000"))
  assert first.returncode == -signal.SIGKILL, first.stdout[-3000:]
  assert "fault injection: SIGKILL the search during" in first.stdout
  before = study_lib.load(search_dir)
  assert before["references"]["glam"]["status"] == "done"
  assert before["trials"][0]["status"] == "running" and len(before["trials"]) == 1
  # The trial subprocess died with the search (no orphan keeps training).
  _wait_for(lambda: not _processes_mentioning(search_dir), 10, "the trial process to exit")

  # Resumed with --pin_cores (one worker: it keeps every core this process may use).
  second = harness.brainformer(*cmd, "--pin_cores", stderr_to_stdout=True, env=env, timeout=900)
  assert second.returncode == 0, second.stdout[-3000:]
  cores = sorted(os.sched_getaffinity(0))
  assert f"pinned workers to cores [{cores}], {len(cores)} TF thread(s) per trial" in second.stdout
  state = study_lib.load(search_dir)
  trials = state["trials"]
  assert [t["id"] for t in trials] == [0, 1]
  assert trials[0]["candidate"] == before["trials"][0]["candidate"]  # same trial, re-run
  assert [t["attempts"] for t in trials] == [2, 1]
  assert state["references"]["glam"]["attempts"] == 1  # the baseline is not measured again
  assert all(t["status"] in study_lib.FINISHED for t in trials)
  assert all(t["reward"] == -1 or t["result"]["step_time"] > 0 for t in trials)
  assert sorted(state["finished"]) == [0, 1]
  # One progress line per trial, in the resumed run only (the killed one finished none).
  assert re.findall(r"^trial +\d+ \[(\d+/\d+)\]", second.stdout, re.M) == ["1/2", "2/2"]
  assert "reference glam" not in second.stdout

  log = json.load(open(os.path.join(search_dir, "search_log.json")))
  assert len(log["trials"]) == 2 and log["references"]["glam"]["result"]["val_loss"] > 0
  assert os.path.getsize(os.path.join(search_dir, "search.png")) > 0
  best = next(i for i in log["ranking"] if log["trials"][i]["status"] == "done")
  for suffix in ("", "_2x", "_4x"):
    text = open(os.path.join(search_dir, "top", f"rank1_trial{best}{suffix}.gin")).read()
    spec_line = next(l for l in text.splitlines() if l.startswith("blocks.block_layers.spec"))
    spec_lib.parse(spec_line.split("=", 1)[1].strip().strip('"'))
