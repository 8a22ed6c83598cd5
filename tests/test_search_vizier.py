"""The search across machines on Open Source Vizier (skipped without google-vizier).

A Vizier server on the loopback interface with the search's PyGlove policy: trials are handed
out per client id, a client's unfinished trial comes back to it, completed trials feed the
algorithm; then a real search: `--serve` and two `--vizier` worker processes sharing one
study, one worker killed during its trial and started again.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("vizier.service.servers")

from vizier import pyvizier as vz  # pylint: disable=g-import-not-at-top
from vizier.service import clients, servers  # pylint: disable=g-import-not-at-top
from vizier.service import pyvizier as svz  # pylint: disable=g-import-not-at-top

from brainformer_tf.search import space as space_lib  # pylint: disable=g-import-not-at-top
from brainformer_tf.search import study as study_lib  # pylint: disable=g-import-not-at-top
from brainformer_tf.search import vizier  # pylint: disable=g-import-not-at-top


def _record(trial_id, dna, loss):
  candidate = space_lib.decode("mini", dna)
  return study_lib.job(trial_id, candidate, status="done", reward=5.0 / loss,
                       objectives=[5.0 / loss, 1.0])


def test_trials_go_out_per_client_and_come_back_to_a_restarted_client(tmp_path):
  server = servers.DefaultVizierServer(
      host="localhost", database_url=f"sqlite:///{tmp_path / 'v.sqlite'}",
      policy_factory=vizier.make_policy_factory())
  clients.environment_variables.server_endpoint = server.endpoint
  config = study_lib.default_config(space="mini", trials=4, population=2, tournament=2)
  problem = vizier._converter(config).problem_or_dummy
  problem.metadata.ns(vizier.NS)["config"] = json.dumps(config)
  study = clients.Study.from_study_config(svz.StudyConfig.from_problem(problem),
                                          owner=vizier.OWNER, study_id="t")
  converter = vizier._converter(config)
  first = study.suggest(count=1, client_id="a")[0]
  # The same client asking again (a restarted worker) gets its unfinished trial back.
  assert study.suggest(count=1, client_id="a")[0].id == first.id == 1
  second = study.suggest(count=1, client_id="b")[0]
  assert second.id == 2
  for trial, loss in ((first, 4.0), (second, 2.0)):
    dna = converter.to_dna(trial.materialize())
    assert dna.metadata["initial_population"] and "parent" not in dna.metadata
    metadata = vz.Metadata()
    metadata.ns(vizier.NS)["record"] = json.dumps(_record(trial.id - 1, dna, loss))
    trial.update_metadata(metadata)
    trial.complete(vz.Measurement(metrics={"reward": 5.0 / loss}))
  # Population of 2 complete: the next trials are mutants of the better one (trial 1).
  third = converter.to_dna(study.suggest(count=1, client_id="a")[0].materialize())
  assert third.metadata["parent"] == 1 and third.metadata["operator"]
  assert [vizier._metadata(t.materialize(), "record")["id"] for t in (first, second)] == [0, 1]


COMMON = ["-m", "brainformer_tf.cli.main", "search"]
SETTINGS = ["--space=tiny", "--trials=2", "--population=2", "--tournament=2", "--budget_s=2",
            "--references=glam", "--top_k=1", "--step_time_slack=3", "--loss_slack=0.5",
            "--gin_param=train_with_progress.final_leak_free_rows = 0"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_workers_share_a_study_and_a_killed_worker_reruns_its_trial(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  port = str(__import__("portpicker").pick_unused_port())
  endpoint = f"localhost:{port}"
  server = subprocess.Popen(
      [sys.executable] + COMMON + SETTINGS + [f"--dir={tmp_path / 'server'}", "--serve",
                                              f"--port={port}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

  def worker(name, extra_env=None):
    return subprocess.Popen(
        [sys.executable] + COMMON + [f"--dir={tmp_path / name}", f"--vizier={endpoint}",
                                     f"--worker_id={name}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(env, **(extra_env or {})))
  try:
    # Worker a alone takes the first trial and is killed right after its training started.
    first = worker("a", {"BRAINFORMER_SEARCH_FAULT": "kill_after_start:trial_0000"})
    out, _ = first.communicate(timeout=900)
    assert first.returncode == -signal.SIGKILL, out[-3000:]
    assert "fault injection: SIGKILL the search during" in out
    b = worker("b")
    time.sleep(5)
    a = worker("a")  # started again under the same id
    outputs = {name: proc.communicate(timeout=900)[0] for name, proc in (("b", b), ("a", a))}
    assert a.returncode == 0 and b.returncode == 0, outputs
    served, _ = server.communicate(timeout=300)
    assert server.returncode == 0, served[-3000:]
  finally:
    for proc in (server,):
      if proc.poll() is None:
        proc.kill()
  assert "trial 0: training" in outputs["a"]  # a re-ran its own trial 0
  assert "trial 0" not in outputs["b"] and "trial 1: training" in outputs["b"]
  log = json.load(open(tmp_path / "server" / "search_log.json"))
  trials = log["trials"]
  assert [t["id"] for t in trials] == [0, 1]  # each trial once, none lost
  assert trials[0]["worker"] == "a" and trials[1]["worker"] == "b"
  assert all(t["status"] in study_lib.FINISHED for t in trials)
  assert log["references"]["glam"]["attempts"] == 1


@pytest.mark.parametrize("algorithm", ["nsga2", "regularized_evolution"])
def test_the_server_proposes_what_one_live_local_algorithm_proposes(tmp_path, algorithm):
  """Trials suggested and completed one at a time through the server follow exactly the
  proposals of one PyGlove algorithm fed the same results in the same order: NSGA-II's turn
  over its elites (a policy rebuilt at every suggestion loses it), and a Swap mutant (whose
  DNA, unless rebuilt from its numbers, Vizier's converter turns back into its parent)."""
  server = servers.DefaultVizierServer(
      host="localhost", database_url=f"sqlite:///{tmp_path / 'v.sqlite'}",
      policy_factory=vizier.make_policy_factory())
  clients.environment_variables.server_endpoint = server.endpoint
  config = study_lib.default_config(space="mini", trials=10, population=3, tournament=2,
                                    algorithm=algorithm)
  converter = vizier._converter(config)
  problem = converter.problem_or_dummy
  problem.metadata.ns(vizier.NS)["config"] = json.dumps(config)
  study = clients.Study.from_study_config(svz.StudyConfig.from_problem(problem),
                                          owner=vizier.OWNER, study_id=algorithm)
  local = space_lib.algorithm(config)
  for trial_id in range(config["trials"]):
    served = study.suggest(count=1, client_id="a")[0]
    dna = converter.to_dna(served.materialize())
    expected = local.propose()
    assert dna.to_numbers() == expected.to_numbers(), trial_id
    loss = 3.0 + (sum(dna.to_numbers()) * 7919 % 101) / 100  # a fixed result per block
    record = _record(trial_id, dna, loss)
    record["objectives"] = [5.0 / loss, 1.0 + (sum(dna.to_numbers()) % 7) / 10]
    local.feedback(expected, study_lib.fitness(config, record))
    metadata = vz.Metadata()
    metadata.ns(vizier.NS)["record"] = json.dumps(record)
    served.update_metadata(metadata)
    served.complete(vz.Measurement(metrics={"reward": record["reward"]}))
