"""The local study on PyGlove's algorithms: baselines first, aging, resume, NSGA-II, the
report and the budget hook (no training here)."""

import json
import os
import random
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from brainformer_tf.cli import search as search_cli
from brainformer_tf.search import report, space as space_lib, study as study_lib
from brainformer_tf.search import trial
from brainformer_tf.search.space import Candidate
from brainformer_tf.training import budget
import harness


def _study(tmp_path, **overrides):
  overrides.setdefault("references", ["glam", "dense"])
  return study_lib.Study(str(tmp_path), study_lib.default_config(space="mini", **overrides))


def _result(val_loss, step_time, status="done", check_loss=None):
  return {"status": status, "val_loss": val_loss, "step_time": step_time, "steps": 10,
          "check": {"loss": check_loss or val_loss + 1, "step_time": step_time},
          "early_stop": "x" if status == "early_stop" else None}


def _finish_references(study):
  for name in study.state["references"]:
    job = study.next_job()
    assert job["id"] == name
    study.record(name, _result(5.0, 0.1))


def _population(study):
  return [dna.metadata["trial"] for dna in study._algorithm.population]


def test_trials_wait_for_the_glam_baseline(tmp_path):
  study = _study(tmp_path)
  assert study.next_job()["id"] == "glam"
  assert study.next_job()["id"] == "dense"
  assert study.next_job() == study_lib.WAIT  # glam still running
  study.record("glam", _result(5.0, 0.1))
  assert study.next_job()["id"] == 0


def test_aging_removes_exactly_the_oldest(tmp_path):
  study = _study(tmp_path, population=4, tournament=2, trials=12)
  _finish_references(study)
  rng = random.Random(0)
  added = []
  for _ in range(12):
    job = study.next_job()
    # Rewards unrelated to age: the oldest must go even when it is the best.
    study.record(job["id"], _result(rng.uniform(3, 6), 0.1))
    added.append(job["id"])
    assert _population(study) == added[-4:]
  assert study.next_job() == study_lib.ALL_DONE


def test_first_trials_are_random_then_mutants_of_tournament_winners(tmp_path):
  study = _study(tmp_path, population=3, tournament=3, trials=6)
  _finish_references(study)
  for loss in (4.0, 3.0, 5.0):  # trial 1 has the best reward
    job = study.next_job()
    assert job["parent"] is None and job["operator"] is None
    study.record(job["id"], _result(loss, 0.1))
  job = study.next_job()
  assert job["parent"] == 1  # tournament = the whole population: the best wins
  assert job["candidate"] != study.state["trials"][1]["candidate"]
  block, mini = Candidate.from_json(job["candidate"]).block, space_lib.get("mini")
  assert "a" in block.letters and mini.min_layers <= len(block.layers) <= mini.max_layers


def test_resume_reruns_the_running_trial_and_replays_the_feedback(tmp_path):
  study = _study(tmp_path, population=3, tournament=2, trials=8)
  _finish_references(study)
  for loss in (4.0, 3.0, 5.0, 4.5, 3.5):
    study.record(study.next_job()["id"], _result(loss, 0.1))
  running = study.next_job()
  population = _population(study)
  with pytest.raises(ValueError, match="another search process"):
    _study(tmp_path, population=3, tournament=2, trials=8)
  study.close()  # as if killed: trial 5 stays "running" in state.json
  assert study_lib.load(str(tmp_path))["trials"][5]["status"] == "running"
  resumed = _study(tmp_path, population=3, tournament=2, trials=8)
  assert _population(resumed) == population == [2, 3, 4]
  again = resumed.next_job()
  assert again["id"] == running["id"] == 5 and again["candidate"] == running["candidate"]
  assert again["attempts"] == 2 and len(resumed.state["trials"]) == 6
  assert resumed.state["references"]["glam"]["attempts"] == 1  # not measured again
  resumed.record(5, _result(3.0, 0.1))
  assert _population(resumed) == [3, 4, 5]
  assert resumed.next_job()["id"] == 6


def test_resume_checks_settings(tmp_path):
  study = _study(tmp_path)
  _finish_references(study)
  study.next_job()
  study.close()
  config = dict(study.state["config"], trials=50)
  resumed = study_lib.Study(str(tmp_path), config)
  assert resumed.state["config"]["trials"] == 50
  resumed.close()
  with pytest.raises(ValueError, match="budget_s=5.0 differs"):
    study_lib.Study(str(tmp_path), dict(config, budget_s=5.0))


def test_config_errors_name_the_setting():
  with pytest.raises(ValueError, match="tournament=5 must be >= 2 and <= population=3"):
    study_lib.default_config(population=3, tournament=5)
  with pytest.raises(ValueError, match="must include 'glam'"):
    study_lib.default_config(references=["dense"])
  with pytest.raises(ValueError, match="operators="):
    study_lib.default_config(operators=["teleport"])
  with pytest.raises(ValueError, match="algorithm='hill_climb'"):
    study_lib.default_config(algorithm="hill_climb")


def test_reward_ranks_loss_penalises_slowness_and_early_stop_is_worst(tmp_path):
  study = _study(tmp_path, step_time_slack=1.0)
  _finish_references(study)  # GLaM: loss 5.0, 0.1 s per step
  score = lambda loss, step_time: study_lib.score(study.state, _result(loss, step_time))
  assert score(5.0, 0.1)[0] == pytest.approx(1.0)
  assert score(4.0, 0.1)[0] > 1 > score(6.0, 0.1)[0] > 0
  assert score(5.0, 0.2)[0] == pytest.approx(0.5)
  assert score(5.0, 0.05)[0] == pytest.approx(1.0)  # faster: no bonus
  assert score(2.5, 0.05)[1] == pytest.approx((2.0, 2.0))
  job = study.next_job()
  done = study.record(job["id"], _result(50.0, 1.0, "early_stop"))
  assert done["reward"] == -1 and done["objectives"] == [-1, -1]
  with pytest.raises(ValueError, match="val_loss"):
    score(0.0, 0.1)


def test_nsga2_feeds_both_objectives_and_the_report_has_the_pareto_front(tmp_path):
  study = _study(tmp_path, algorithm="nsga2", population=2, tournament=2, trials=6)
  _finish_references(study)  # GLaM: loss 5.0, 0.1 s per step
  points = [(4.0, 0.2), (4.5, 0.1), (3.9, 0.3), (4.6, 0.1), (4.4, 0.09), (4.0, 0.25)]
  for loss, step_time in points:
    job = study.next_job()
    study.record(job["id"], _result(loss, step_time))
  # By hand: 3 is beaten by 1 (same time, lower loss), 1 by 4, 5 by 0; 0, 2, 4 remain.
  assert sorted(report.pareto(study.state)) == [0, 2, 4]
  # NSGA-II's elites (2 = population) come from that front, fed (L_glam / L, T_glam / T).
  elites = {dna.metadata["trial"]: dna.metadata["reward"]
            for dna in study._algorithm.global_state.elites}
  assert len(elites) == 2 and set(elites) <= {0, 2, 4}
  for trial_id, fitness in elites.items():
    loss, step_time = points[trial_id]
    assert fitness == pytest.approx((5.0 / loss, 0.1 / step_time))
  assert "Pareto front (val loss, step time), fastest first: trials [4, 0, 2]" in (
      report.summary(study.state))


def test_report_writes_log_topk_gin_and_plot(tmp_path):
  study = _study(tmp_path, population=2, tournament=2, trials=3)
  _finish_references(study)
  for loss in (4.0, 6.0, 3.0):
    job = study.next_job()
    study.record(job["id"], _result(loss, 0.1))
  paths = report.write(str(tmp_path), study.state, top_k=2)
  assert os.path.basename(paths["rank1"]) == "rank1_trial2.gin"  # the lowest loss
  assert os.path.basename(paths["rank2"]) == "rank2_trial0.gin"
  assert "num_layers = 8" in open(paths["rank1_4x"]).read()
  assert os.path.getsize(paths["plot"]) > 0
  assert json.load(open(paths["log"]))["ranking"][:2] == [2, 0]
  assert "best    trial 2" in report.summary(study.state)


def _busy(seconds=0.02):
  """Spends `seconds` of CPU time (so wall and process clocks both advance)."""
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass
  return 0


def test_budget_hook_stops_at_the_budget_and_early_at_the_check(tmp_path):
  def train(model_dir, **kwargs):
    os.makedirs(model_dir)
    with tf.Graph().as_default():
      step = tf.train.get_or_create_global_step()
      loss = tf.identity(10.0 / tf.cast(step + 1, tf.float32))
      tf.add_to_collection(tf.GraphKeys.LOSSES, loss)
      slow = tf.py_func(_busy, [], tf.int64)
      with tf.control_dependencies([slow]):
        train_op = tf.assign_add(step, 1)
      hook = budget.WallClockBudgetHook(model_dir, **kwargs)
      with tf.train.MonitoredSession(hooks=[hook]) as session:
        while not session.should_stop():
          session.run(train_op)
    return budget.read(model_dir)

  full = train(str(tmp_path / "a"), seconds=0.5, check_at=0.25)
  assert full["early_stop"] is None and 0.5 <= full["end"]["elapsed"] < 1.5
  assert 0.125 <= full["check"]["elapsed"] < full["end"]["elapsed"]
  assert full["end"]["step_time"] >= 0.02
  slow = train(str(tmp_path / "b"), seconds=2.0, check_at=0.25, max_step_time=0.001)
  assert "step time" in slow["early_stop"] and slow["end"]["elapsed"] < 1.0
  worse = train(str(tmp_path / "c"), seconds=2.0, check_at=0.25, max_loss=0.01)
  assert "loss" in worse["early_stop"] and worse["end"]["elapsed"] < 1.0
  cpu = train(str(tmp_path / "d"), seconds=0.3, clock="process")
  assert cpu["clock"] == "process" and 0.3 <= cpu["end"]["elapsed"] < 1.0
  with pytest.raises(ValueError, match="budget.settings.clock='sundial'"):
    budget.settings(clock="sundial")


@pytest.mark.slow
def test_pin_cores_splits_the_available_cores_between_workers(tmp_path):
  assert search_cli.worker_cores(2, {3, 1, 0, 2}) == [[0, 1], [2, 3]]
  assert search_cli.worker_cores(2, {0, 1, 2}) == [[0], [1]]
  assert trial.thread_env(2)["TF_NUM_INTRAOP_THREADS"] == "2"
  with pytest.raises(ValueError, match="--workers=3 needs at least 3 cores"):
    search_cli.worker_cores(3, {0, 1})
  # From the command line: exit 2, one line naming the flag, nothing written.
  too_many = len(os.sched_getaffinity(0)) + 1
  proc = harness.brainformer("search", f"--dir={tmp_path / 's'}", f"--workers={too_many}",
                             "--pin_cores", timeout=120)
  assert proc.returncode == 2
  assert f"--pin_cores: --workers={too_many} needs at least" in proc.stderr
  assert not (tmp_path / "s").exists()


def test_trial_result_takes_the_leak_free_validation_never_a_whole_sequence_one(tmp_path):
  (tmp_path / budget.BUDGET_FILE).write_text(json.dumps({"end": {"step": 9, "step_time": 0.1}}))
  write = lambda log: (tmp_path / "train_log.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in [{"step": 9, "loss": 5.0}] + log))
  write([{"step": 9, "validation_loss": 4.0, "whole_sequence": False}])
  assert trial.read_result(str(tmp_path))["val_loss"] == 4.0        # causal: the one pass
  whole = {"step": 9, "validation_loss": 4.0, "whole_sequence": True}  # routing reads the row
  write([whole])
  assert trial.read_result(str(tmp_path))["status"] == "failed"      # no figure to rank by
  write([whole, {"step": 9, "validation_loss_leak_free": 4.2, "rows": 16}])
  assert trial.read_result(str(tmp_path))["val_loss"] == 4.2


def test_multi_machine_flags_without_google_vizier_are_one_line_exit_2(tmp_path, monkeypatch,
                                                                        capsys):
  monkeypatch.setitem(sys.modules, "vizier", None)  # as if google-vizier were not installed
  assert search_cli.run(["search", f"--dir={tmp_path}", "--serve"]) == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith("brainformer search: error: multi-machine search needs google-vizier")
  assert "requirements/search_vizier.txt" in error and "\n" not in error
  assert not (tmp_path / study_lib.STATE).exists()
