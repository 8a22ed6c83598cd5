"""A search on one machine: settings, baselines and trials in <dir>/state.json, proposals from
the PyGlove algorithm (mutation.algorithm) in this process, worker threads that train.

state.json (rewritten atomically after every proposal and every result):
  config      the search settings (a resumed search must use the same)
  references  name -> job (glam, then dense and block1): the baselines, measured first
  trials      [job]: id, dna (PyGlove DNA numbers) and dna_metadata (PyGlove's, from the
              proposal), candidate, parent, operator, status, result, reward, objectives,
              attempts
  finished    trial ids in the order their results came in (the algorithm's feedback order)
A job is "pending", "running" or finished ("done", "early_stop", "failed"). One process owns a
search directory (an fcntl lock held while it runs). On start, the algorithm replays the
feedback of the finished trials in order (`recover`); trials that were running when the last
process died are re-run from scratch under the same id with the same candidate, so no trial
is lost and none is counted twice.
"""

import fcntl
import json
import os
import threading
from typing import Callable, Optional

from brainformer_tf import atomic
from brainformer_tf.search import mutation
from brainformer_tf.search import reward as reward_lib
from brainformer_tf.search import space as space_lib
from brainformer_tf.search import trial as trial_lib
from brainformer_tf.search.space import Candidate

STATE = "state.json"
LOCK = "state.lock"
FINISHED = ("done", "early_stop", "failed")
WAIT, ALL_DONE = "wait", "all_done"
RESUMABLE = ("trials",)  # settings a resumed search may change


class SearchError(RuntimeError):
  """The search cannot go on (e.g. the GLaM baseline failed); the message says why."""


def default_config(**overrides) -> dict:
  """The search settings, see `brainformer search --help` and docs/search.md."""
  config = dict(space="mini", trials=40, algorithm="regularized_evolution", population=10,
                tournament=3, seed=0, references=["glam", "dense", "block1"],
                operators=list(mutation.OPERATORS), budget_s=60.0, clock="wall",
                step_time_slack=1.1, loss_slack=0.0, time_weight=1.0,
                recipe="search/cpu_proxy.gin", train_files=[], validation_files=[],
                gin_params=[], timeout_s=None)
  unknown = set(overrides) - set(config)
  if unknown:
    raise ValueError(f"unknown search settings {sorted(unknown)}")
  config.update(overrides)
  _check_config(config)
  return config


def _check_config(config):
  space_lib.get(config["space"])
  for key in ("trials", "population", "tournament"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"{key}={config[key]!r} must be a positive integer")
  if config["algorithm"] not in mutation.ALGORITHMS:
    raise ValueError(f"algorithm={config['algorithm']!r}: choose from {list(mutation.ALGORITHMS)}")
  if not 2 <= config["tournament"] <= config["population"]:
    raise ValueError(f"tournament={config['tournament']} must be >= 2 and <= population="
                     f"{config['population']}")
  if "glam" not in config["references"]:
    raise ValueError(f"references={config['references']!r} must include 'glam' (the early "
                     f"stop and the reward are relative to it)")
  unknown = set(config["references"]) - {"glam", "dense", "block1"}
  if unknown:
    raise ValueError(f"references: {sorted(unknown)} unknown; choose from glam, dense, block1")
  if config["clock"] not in ("wall", "process"):
    raise ValueError(f"clock={config['clock']!r}: choose wall or process")
  if not config["budget_s"] > 0:
    raise ValueError(f"budget_s={config['budget_s']!r} must be positive")
  unknown = set(config["operators"]) - set(mutation.OPERATORS)
  if unknown or not config["operators"]:
    raise ValueError(f"operators={config['operators']!r}: choose from {list(mutation.OPERATORS)}")


def load(search_dir: str) -> Optional[dict]:
  path = os.path.join(search_dir, STATE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def job(job_id, candidate: Candidate, **extra) -> dict:
  return {"id": job_id, "candidate": candidate.to_json(), "status": "pending", "result": None,
          "reward": None, "objectives": None, "attempts": 0, **extra}


def new_state(config: dict) -> dict:
  refs = space_lib.references(space_lib.get(config["space"]))
  return {"version": 2, "config": config, "trials": [], "finished": [],
          "references": {name: job(name, refs[name]) for name in config["references"]}}


def check_resume(state: dict, config: dict, where: str):
  """ValueError naming the first setting that differs from the search being resumed."""
  for key, value in config.items():
    if key not in RESUMABLE and state["config"].get(key) != value:
      raise ValueError(f"{key}={value!r} differs from the search being resumed in {where} "
                       f"({state['config'].get(key)!r}); use the same value or another --dir")


def thresholds(state: dict):
  """(max_step_time, max_loss) of the early stop, from the GLaM baseline."""
  config = state["config"]
  glam = state["references"]["glam"]["result"]
  if not glam or glam["status"] != "done":
    raise SearchError(f"the GLaM baseline failed ({(glam or {}).get('error')}); see "
                      f"references/glam/train.log; fix and run the search again")
  return (glam["step_time"] * config["step_time_slack"],
          glam["check"]["loss"] * (1 + config["loss_slack"]))


def score(state: dict, result: dict):
  """(reward, objectives) of a trial result: see reward.py."""
  if result["status"] != "done":
    return reward_lib.EARLY_STOP, reward_lib.EARLY_STOP_OBJECTIVES
  glam = state["references"]["glam"]["result"]
  max_step_time, _ = thresholds(state)
  return (reward_lib.reward(result["val_loss"], result["step_time"], glam["val_loss"],
                            max_step_time, state["config"]["time_weight"]),
          reward_lib.objectives(result["val_loss"], result["step_time"], glam["val_loss"],
                                glam["step_time"]))


def fitness(state: dict, trial: dict):
  """What the algorithm maximises: the reward, or NSGA-II's objectives."""
  return (tuple(trial["objectives"]) if state["config"]["algorithm"] == "nsga2"
          else trial["reward"])


def job_dir(search_dir: str, job_id) -> str:
  if isinstance(job_id, str):
    return os.path.join(search_dir, "references", job_id)
  return os.path.join(search_dir, "trials", f"trial_{job_id:04d}")


class Study:
  """The local search: state.json plus the PyGlove algorithm; thread-safe. Without
  local_trials only the baselines run here (a Vizier server serves the trials)."""

  def __init__(self, search_dir: str, config: dict, local_trials: bool = True):
    self.dir, self.local_trials = search_dir, local_trials
    self._lock = threading.Lock()
    os.makedirs(search_dir, exist_ok=True)
    self._owner = open(os.path.join(search_dir, LOCK), "a")
    try:
      fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise ValueError(f"--dir={search_dir}: another search process is running there") from None
    self.state = load(search_dir)
    if self.state is None:
      self.state = new_state(config)
    else:
      check_resume(self.state, config, search_dir)
      self.state["config"]["trials"] = config["trials"]
    for job_ in self._jobs():
      if job_["status"] == "running" or (job_["id"] == "glam" and job_["status"] == "failed"):
        job_["status"] = "pending"  # its process died with the last search; retry failed GLaM
    self._save()
    self._algorithm = self._recover()

  def _recover(self):
    """The algorithm, with the finished trials fed back in order and the others proposed."""
    trials = self.state["trials"]
    order = self.state["finished"] + [t["id"] for t in trials if t["status"] not in FINISHED]
    return mutation.algorithm(self.state["config"], [
        (self._dna(i), fitness(self.state, trials[i]) if trials[i]["status"] in FINISHED
         else None) for i in order])

  def _dna(self, trial_id):
    """The trial's DNA with the metadata PyGlove gave it when proposing it."""
    trial = self.state["trials"][trial_id]
    dna = space_lib.dna_from_json(self.state["config"]["space"], trial["dna"])
    return dna.rebind(metadata=trial["dna_metadata"], skip_notification=True)

  def close(self):
    """Releases the directory for another process."""
    self._owner.close()

  def _jobs(self):
    return list(self.state["references"].values()) + self.state["trials"]

  def _save(self):
    atomic.write_json(os.path.join(self.dir, STATE), self.state, fsync=True)

  def next_job(self):
    """The job to run next (marked running), WAIT or ALL_DONE."""
    with self._lock:
      refs = self.state["references"]
      ready = [j for j in refs.values() if j["status"] == "pending"]
      if refs["glam"]["status"] in FINISHED and self.local_trials:
        ready += [j for j in self.state["trials"] if j["status"] == "pending"]
        if not ready and len(self.state["trials"]) < self.state["config"]["trials"]:
          ready = [self._propose()]
      if ready:
        ready[0]["status"] = "running"
        ready[0]["attempts"] += 1
        self._save()
        return dict(ready[0])
      if any(j["status"] == "running" for j in self._jobs()):
        return WAIT
      return ALL_DONE

  def _propose(self) -> dict:
    trial_id, name = len(self.state["trials"]), self.state["config"]["space"]
    dna = self._algorithm.propose().set_metadata("trial", trial_id)
    proposed = job(trial_id, space_lib.decode(name, dna), dna=dna.to_numbers(),
                   dna_metadata=dict(dna.metadata), parent=dna.metadata.get("parent"),
                   operator=dna.metadata.get("operator"))
    self.state["trials"].append(proposed)
    return proposed

  def record(self, job_id, result: dict) -> dict:
    """Stores a finished job's result; a trial's reward goes back to the algorithm."""
    with self._lock:
      if isinstance(job_id, str):
        done = self.state["references"][job_id]
        done.update(status=result["status"], result=result)
      else:
        done = self.state["trials"][job_id]
        reward, objectives = score(self.state, result)
        done.update(status=result["status"], result=result, reward=reward,
                    objectives=list(objectives))
        self.state["finished"].append(job_id)
        self._algorithm.feedback(self._dna(job_id), fitness(self.state, done))
      self._save()
      return dict(done)


def work(study, settings: trial_lib.TrialSettings, cores=None,
         log: Callable[[str], None] = print, poll_s: float = 2.0) -> int:
  """Runs jobs of `study` until it is complete; returns how many this worker ran."""
  ran = 0
  space = space_lib.get(study.state["config"]["space"])
  while True:
    next_job = study.next_job()
    if next_job == ALL_DONE:
      return ran
    if next_job == WAIT:
      threading.Event().wait(poll_s)
      continue
    is_ref = isinstance(next_job["id"], str)
    limits = (None, None) if is_ref else thresholds(study.state)
    candidate = Candidate.from_json(next_job["candidate"])
    what = f"reference {next_job['id']}" if is_ref else f"trial {next_job['id']}"
    log(f"{what}: training {candidate} for {settings.budget_s:g}s "
        f"(attempt {next_job['attempts']})")
    result = trial_lib.run(job_dir(study.dir, next_job["id"]), space, candidate, settings,
                           *limits, cores=cores)
    done = study.record(next_job["id"], result)
    ran += 1
    log(progress_line(study.state, done))
    if next_job["id"] == "glam":
      thresholds(study.state)  # a failed GLaM baseline stops the search: nothing compares to it


def trial_settings(config: dict) -> trial_lib.TrialSettings:
  return trial_lib.TrialSettings(
      budget_s=config["budget_s"], clock=config["clock"], recipe=config["recipe"],
      train_files=config["train_files"], validation_files=config["validation_files"],
      gin_params=config["gin_params"], timeout_s=config["timeout_s"])


def run(study, worker_cores, log: Callable[[str], None] = print):
  """Runs the study with one worker thread per entry of `worker_cores` (None: unpinned)."""
  settings, errors = trial_settings(study.state["config"]), []

  def worker(cores):
    try:
      work(study, settings, cores, log)
    except SearchError as e:
      errors.append(e)
  threads = [threading.Thread(target=worker, args=(cores,)) for cores in worker_cores]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  if errors:
    raise errors[0]


def progress_line(state: dict, job_: dict) -> str:
  """One line per finished job: result, reward, the best so far, the block."""
  r = job_["result"]
  if isinstance(job_["id"], str):
    head = f"reference {job_['id']:6s} {r['status']}"
  else:
    finished = sum(t["status"] in FINISHED for t in state["trials"])
    origin = (f"{job_['operator']} of {job_['parent']}" if job_.get("parent") is not None
              else "random")
    head = (f"trial {job_['id']:3d} [{finished}/{state['config']['trials']}] ({origin}) "
            f"{r['status']} reward {job_['reward']:+.3f}")
  numbers = (f"val {r['val_loss']:.4f} step {1000 * r['step_time']:.1f}ms x{r['steps']}"
             if r["val_loss"] is not None and r["step_time"] else "")
  if r.get("early_stop"):
    numbers += f" stopped: {r['early_stop']}"
  if r["status"] == "failed":
    numbers += f" error: {r.get('error', '')[:200]}"
  scored = [t for t in state["trials"] if t["reward"] is not None]
  best = (f" | best {max(t['reward'] for t in scored):+.3f} (trial "
          f"{max(scored, key=lambda t: t['reward'])['id']})" if scored else "")
  return f"{head} {numbers}{best} | {Candidate.from_json(job_['candidate'])}"
