"""A search across machines on Open Source Vizier (optional: requirements/search_vizier.txt).

`serve` measures the baselines here, then serves the study, settings and baselines in its
metadata, from a Vizier server (datastore <dir>/vizier.sqlite; restarted with the same --dir it
resumes) whose Pythia policy is the search's PyGlove algorithm. `work` trains the trials Vizier
hands a worker's client id and completes each with its record. Vizier hands a client's
unfinished trial back to it first (a restarted worker re-runs it) and never suggests a completed
one again. Workers stop asking once the study holds --trials trials (Vizier 0.1.21's server
cannot take an empty suggestion); two asking at the same moment can make one trial more.
"""

import json
import os
import threading
import time
from typing import Callable

from brainformer_tf.search import space as space_lib
from brainformer_tf.search import study as study_lib
from brainformer_tf.search import trial as trial_lib

OWNER, NS = "brainformer", "brainformer"


def modules():  # pylint: disable=g-import-not-at-top  (an optional dependency)
  """The Vizier modules; ValueError (exit 2 in the CLI) if google-vizier is not installed."""
  try:
    from vizier import pythia, pyvizier as vz
    from vizier._src.pyglove import converters
    from vizier.service import clients, pyvizier as svz, servers
  except ImportError as e:
    raise ValueError(f"multi-machine search needs google-vizier ({e}); install it with "
                     f"pip install --no-deps -r requirements/search_vizier.txt") from None
  return pythia, vz, converters, clients, servers, svz


def _converter(config):
  """PyGlove's DNA <-> Vizier trial converter for the search's space and objectives."""
  metrics = ["loss_ratio", "speed_ratio"] if config["algorithm"] == "nsga2" else ["reward"]
  return modules()[2].VizierConverter.from_dna_spec(space_lib.dna_spec(config["space"]), metrics)


def _metadata(problem_or_trial, key):
  return json.loads(problem_or_trial.metadata.ns(NS)[key])


def _fitness(config, trial):
  return study_lib.fitness(config, _metadata(trial, "record"))


def make_policy_factory():
  """A Pythia policy factory: each study of the server runs the search's PyGlove algorithm,
  one live algorithm per study (a restarted server recovers it from the study's trials)."""
  pythia, vz = modules()[:2]
  live, lock = {}, threading.Lock()  # study name -> (algorithm, ids of trials fed back)

  class Policy(pythia.Policy):

    def __init__(self, problem, supporter, study_name):
      self._problem, self._supporter, self._name = problem, supporter, study_name

    def suggest(self, request):
      config, trials = _metadata(self._problem, "config"), self._supporter.GetTrials()
      converter, completed = _converter(config), vz.TrialStatus.COMPLETED
      done = sorted((t for t in trials if t.status == completed), key=lambda t: t.completion_time)
      with lock:
        if self._name not in live:  # completed trials in completion order, then the others
          history = [(converter.to_dna(t), _fitness(config, t)) for t in done]
          history += [(converter.to_dna(t), None) for t in trials if t.status != completed]
          live[self._name] = (space_lib.algorithm(config, history), {t.id for t in done})
        evolution, fed = live[self._name]
        for t in (t for t in done if t.id not in fed):
          evolution.feedback(converter.to_dna(t), _fitness(config, t))
          fed.add(t.id)
        dna = evolution.propose().set_metadata("trial", len(trials))
      trial = converter.to_trial(dna, fallback="return_dummy")
      return pythia.SuggestDecision([vz.TrialSuggestion(trial.parameters,
                                                        metadata=trial.metadata)])

    def early_stop(self, request):
      return pythia.EarlyStopDecisions()  # the budget hook stops trials early, not Vizier

  return lambda problem, _, supporter, study_name: Policy(problem, supporter, study_name)


def serve(study, host: str, port: int, name: str, log: Callable[[str], None] = print,
          poll_s: float = 5.0) -> dict:
  """Baselines here, then the trials from a Vizier server; returns the search state."""
  _, _, _, clients, servers, svz = modules()
  study_lib.run(study, [None], log)  # the local study has local_trials=False: baselines only
  server = servers.DefaultVizierServer(
      host=host, port=port, database_url=f"sqlite:///{os.path.join(study.dir, 'vizier.sqlite')}",
      policy_factory=make_policy_factory())
  clients.environment_variables.server_endpoint = server.endpoint
  config = study.state["config"]
  problem = _converter(config).problem_or_dummy
  problem.metadata.ns(NS).update({k: json.dumps(study.state[k]) for k in ("config", "references")})
  vizier_study = clients.Study.from_study_config(
      svz.StudyConfig.from_problem(problem), owner=OWNER, study_id=name)
  log(f"serving study {name!r} at {server.endpoint}: start workers with "
      f"brainformer search --dir=<their dir> --vizier={server.endpoint} --study={name}")
  while True:  # until --trials trials (or all the study holds, if more) are complete
    trials = [t.materialize() for t in vizier_study.trials()]
    records = [_metadata(t, "record") for t in trials if "record" in t.metadata.ns(NS)]
    if len(records) >= max(config["trials"], len(trials)):
      return dict(study.state, trials=sorted(records, key=lambda record: record["id"]))
    time.sleep(poll_s)


def work(endpoint: str, search_dir: str, name: str, worker_id: str, cores=None,
         log: Callable[[str], None] = print, poll_s: float = 5.0) -> int:
  """Trains the study's trials until the server has no more; returns how many."""
  _, vz, _, clients, _, _ = modules()
  clients.environment_variables.server_endpoint = endpoint
  while True:
    try:
      vizier_study = clients.Study.from_owner_and_id(OWNER, name)
      break
    except Exception:  # pylint: disable=broad-except  (not created yet: baselines running)
      time.sleep(poll_s)
  problem = vizier_study.materialize_problem_statement()
  state = {key: _metadata(problem, key) for key in ("config", "references")}
  config, ran = state["config"], 0
  while True:
    trials = [t.materialize() for t in vizier_study.trials()]
    if len(trials) >= config["trials"] and not any(  # as PyGlove's own Vizier backend does
        t.status == vz.TrialStatus.ACTIVE and t.assigned_worker == worker_id for t in trials):
      return ran
    suggested = vizier_study.suggest(count=1, client_id=worker_id)[0]
    trial_id, dna = suggested.id - 1, _converter(config).to_dna(suggested.materialize())
    candidate = space_lib.decode(config["space"], dna)
    log(f"trial {trial_id}: training {candidate} for {config['budget_s']:g}s ({worker_id})")
    result = trial_lib.run(study_lib.job_dir(search_dir, trial_id), candidate, config,
                           *study_lib.thresholds(state), cores=cores)
    reward, objectives = study_lib.score(state, result)
    record = study_lib.job(trial_id, candidate, status=result["status"], result=result,
                           reward=reward, objectives=list(objectives), worker=worker_id,
                           parent=dna.metadata.get("parent"), operator=dna.metadata.get("operator"))
    metadata = vz.Metadata()
    metadata.ns(NS)["record"] = json.dumps(record)
    suggested.update_metadata(metadata)
    suggested.complete(vz.Measurement(metrics={"reward": reward, "loss_ratio": objectives[0],
                                                "speed_ratio": objectives[1]}))
    ran += 1
    log(f"trial {trial_id} ({worker_id}) {result['status']} reward {reward:+.3f} | {candidate}")
