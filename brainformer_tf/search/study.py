"""A search on one machine: state.json, the PyGlove algorithm (space.algorithm) in this
process, worker threads that train; and the reward (`score`).

state.json (docs/search.md, "State"): config (a resumed search keeps it, but for trials),
references (name -> job, the baselines), trials ([job]: id, dna numbers and dna_metadata from
PyGlove, candidate, parent, operator, status, result, reward, objectives, attempts), finished
(trial ids in feedback order). A job is "pending", "running" or finished ("done",
"early_stop", "failed"). One process owns a search directory (an fcntl lock).
"""

from concurrent import futures
import fcntl
import json
import os
import pathlib
import threading
from typing import Callable, Optional

from brainformer_tf import atomic
from brainformer_tf.search import report
from brainformer_tf.search import space as space_lib
from brainformer_tf.search import trial as trial_lib

STATE = "state.json"
LOCK = "state.lock"
FINISHED = ("done", "early_stop", "failed")
WAIT, ALL_DONE = "wait", "all_done"
REFERENCES = ("glam", "dense", "block1")
EARLY_STOP = -1.0  # the reward (and each objective) of an early-stopped or failed trial


class SearchError(RuntimeError):
  """The search cannot go on (e.g. the GLaM baseline failed); the message says why."""


def default_config(**overrides) -> dict:
  """The search settings (`brainformer search --help`, docs/search.md); ValueError names a bad
  one."""
  config = dict(space="mini", trials=40, algorithm="regularized_evolution", population=10,
                tournament=3, seed=0, references=list(REFERENCES),
                operators=list(space_lib.OPERATORS), budget_s=60.0, clock="wall",
                step_time_slack=1.1, loss_slack=0.0, time_weight=1.0,
                recipe="search/cpu_proxy.gin", train_files=[], validation_files=[],
                gin_params=[], timeout_s=None)
  unknown = set(overrides) - set(config)
  if unknown:
    raise ValueError(f"unknown search settings {sorted(unknown)}")
  config.update(overrides)
  space_lib.get(config["space"])
  for key in ("trials", "population", "tournament"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"{key}={config[key]!r} must be a positive integer")
  if not 2 <= config["tournament"] <= config["population"]:
    raise ValueError(f"tournament={config['tournament']} must be >= 2 and <= population="
                     f"{config['population']}")
  for key in ("budget_s", "step_time_slack"):
    if not config[key] > 0:
      raise ValueError(f"{key}={config[key]!r} must be positive")
  for key, choices in (("algorithm", space_lib.ALGORITHMS), ("clock", ("wall", "process")),
                       ("references", REFERENCES), ("operators", space_lib.OPERATORS)):
    values = config[key] if isinstance(config[key], list) else [config[key]]
    if not values or set(values) - set(choices):
      raise ValueError(f"{key}={config[key]!r}: choose from {list(choices)}")
  if "glam" not in config["references"]:
    raise ValueError(f"references={config['references']!r} must include 'glam' (the early "
                     f"stop and the reward are relative to it)")
  return config


def load(search_dir: str) -> Optional[dict]:
  path = pathlib.Path(search_dir, STATE)
  return json.loads(path.read_text()) if path.exists() else None


def job(job_id, candidate: space_lib.Candidate, **extra) -> dict:
  return {"id": job_id, "candidate": candidate.to_json(), "status": "pending", "result": None,
          "reward": None, "objectives": None, "attempts": 0, **extra}


def job_dir(search_dir: str, job_id) -> str:
  return (os.path.join(search_dir, "references", job_id) if isinstance(job_id, str)
          else os.path.join(search_dir, "trials", f"trial_{job_id:04d}"))


def thresholds(state: dict):
  """(max_step_time, max_loss) of the early stop, from the GLaM baseline."""
  config, glam = state["config"], state["references"]["glam"]["result"]
  if not glam or glam["status"] != "done":
    raise SearchError(f"the GLaM baseline failed ({(glam or {}).get('error')}); see "
                      f"references/glam/train.log; fix and run the search again")
  return (glam["step_time"] * config["step_time_slack"],
          glam["check"]["loss"] * (1 + config["loss_slack"]))


def score(state: dict, result: dict):
  """(reward, objectives) of a trial result (the paper gives only the reward's inputs and the
  -1 of an early stop): -1 and (-1, -1) if early-stopped at the check or failed, else
    reward = (L_glam / L) * min(1, T_max / T) ** w,  objectives = (L_glam / L, T_glam / T)
  L, T: the trial's validation log-perplexity and mean step time; L_glam, T_glam: the GLaM
  baseline's (same budget); T_max: the early stop's step-time limit; w: time_weight. Both are 1
  for a block as good as GLaM, above 1 for a better one, else > 0 (docs/search.md says why).
  """
  if result["status"] != "done":
    return EARLY_STOP, (EARLY_STOP, EARLY_STOP)
  glam, (max_step_time, _) = state["references"]["glam"]["result"], thresholds(state)
  loss, step_time = result["val_loss"], result["step_time"]
  if not all(v > 0 for v in (loss, step_time, glam["val_loss"], glam["step_time"])):
    raise ValueError(f"val_loss={loss!r}, step_time={step_time!r} and GLaM's "
                     f"({glam['val_loss']!r}, {glam['step_time']!r}) must be positive")
  slowness = min(1.0, max_step_time / step_time) ** state["config"]["time_weight"]
  return (glam["val_loss"] / loss * slowness,
          (glam["val_loss"] / loss, glam["step_time"] / step_time))


def fitness(config: dict, trial: dict):
  """What the algorithm maximises: the reward, or NSGA-II's objectives."""
  return tuple(trial["objectives"]) if config["algorithm"] == "nsga2" else trial["reward"]


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
      refs = space_lib.references(space_lib.get(config["space"]))
      self.state = {"version": 2, "config": config, "trials": [], "finished": [],
                    "references": {name: job(name, refs[name]) for name in config["references"]}}
    for key, value in config.items():  # a resumed search: only trials may change
      if key != "trials" and self.state["config"].get(key) != value:
        raise ValueError(f"{key}={value!r} differs from the search being resumed in "
                         f"{search_dir} ({self.state['config'].get(key)!r}); use the same "
                         f"value or another --dir")
    self.state["config"]["trials"] = config["trials"]
    for job_ in [*self.state["references"].values(), *self.state["trials"]]:
      if job_["status"] == "running" or (job_["id"] == "glam" and job_["status"] == "failed"):
        job_["status"] = "pending"  # its process died with the last search; retry failed GLaM
    self._save()
    trials = self.state["trials"]
    order = self.state["finished"] + [t["id"] for t in trials if t["status"] not in FINISHED]
    self._algorithm = space_lib.algorithm(config, [  # the unfinished ones: proposed, no result
        (self._dna(i), fitness(config, trials[i]) if trials[i]["status"] in FINISHED else None)
        for i in order])

  def _dna(self, trial_id):
    """The trial's DNA with the metadata PyGlove gave it when proposing it."""
    trial = self.state["trials"][trial_id]
    return space_lib.dna_of(self.state["config"]["space"], trial["dna"], trial["dna_metadata"])

  def close(self):
    """Releases the directory for another process."""
    self._owner.close()

  def _save(self):
    atomic.write_json(os.path.join(self.dir, STATE), self.state, fsync=True)

  def next_job(self):
    """The job to run next (marked running), WAIT or ALL_DONE."""
    with self._lock:
      refs, trials, config = self.state["references"], self.state["trials"], self.state["config"]
      ready = [j for j in refs.values() if j["status"] == "pending"]
      if refs["glam"]["status"] in FINISHED and self.local_trials:
        ready += [j for j in trials if j["status"] == "pending"]
        if not ready and len(trials) < config["trials"]:  # a new trial from the algorithm
          dna = self._algorithm.propose().set_metadata("trial", len(trials))
          trials.append(job(len(trials), space_lib.decode(config["space"], dna),
                            dna=dna.to_numbers(), dna_metadata=dict(dna.metadata),
                            parent=dna.metadata.get("parent"),
                            operator=dna.metadata.get("operator")))
          ready = trials[-1:]
      if not ready:
        running = any(j["status"] == "running" for j in [*refs.values(), *trials])
        return WAIT if running else ALL_DONE
      ready[0].update(status="running", attempts=ready[0]["attempts"] + 1)
      self._save()
      return dict(ready[0])

  def record(self, job_id, result: dict) -> dict:
    """Stores a finished job's result; a trial's reward goes back to the algorithm."""
    with self._lock:
      is_trial = not isinstance(job_id, str)
      done = (self.state["trials"] if is_trial else self.state["references"])[job_id]
      done.update(status=result["status"], result=result)
      if is_trial:
        reward, objectives = score(self.state, result)
        done.update(reward=reward, objectives=list(objectives))
        self.state["finished"].append(job_id)
        self._algorithm.feedback(self._dna(job_id), fitness(self.state["config"], done))
      self._save()
      return dict(done)


def work(study, cores=None, log: Callable[[str], None] = print, poll_s: float = 2.0):
  """Runs jobs of `study` until it is complete."""
  config = study.state["config"]
  while True:
    next_job = study.next_job()
    if next_job == ALL_DONE:
      return
    if next_job == WAIT:
      threading.Event().wait(poll_s)
      continue
    job_id, candidate = next_job["id"], space_lib.Candidate.from_json(next_job["candidate"])
    is_ref = isinstance(job_id, str)
    log(f"{'reference' if is_ref else 'trial'} {job_id}: training {candidate} for "
        f"{config['budget_s']:g}s (attempt {next_job['attempts']})")
    result = trial_lib.run(job_dir(study.dir, job_id), candidate, config,
                           *((None, None) if is_ref else thresholds(study.state)), cores=cores)
    log(report.progress_line(study.state, study.record(job_id, result)))
    if job_id == "glam":
      thresholds(study.state)  # a failed GLaM baseline stops the search: nothing compares to it


def run(study, worker_cores, log: Callable[[str], None] = print):
  """Runs the study with one worker thread per entry of `worker_cores` (None: unpinned); once
  all have stopped, raises the first one's error (SearchError: the GLaM baseline failed)."""
  with futures.ThreadPoolExecutor(len(worker_cores)) as pool:
    for worker in [pool.submit(work, study, cores, log) for cores in worker_cores]:
      worker.result()
