"""Regularized (aging) evolution (paper Algorithm 1; Real et al. 2019) with persistent state.

All state lives in <search_dir>/state.json, rewritten atomically (tmp + os.replace) under an
exclusive fcntl lock on <search_dir>/state.lock by every worker process:
  config      the search settings (a resumed search must use the same)
  references  name -> job (glam, then dense and block1): the baselines, measured first
  trials      [job]: id, candidate, parent, operator, status, claim, result, reward
  population  trial ids, oldest first: the aging queue
A job is "pending", "running" (claim: pid, host, time) or finished ("done", "early_stop",
"failed"). A worker claims a job, runs it unlocked, and records it. A running job whose
claiming process is gone (killed search or worker) becomes pending again and is re-run from
scratch under the same id: no trial is lost and none is counted twice.

Proposal of trial i: the first `population` trials are random; later ones sample `tournament`
members of the population, mutate the one with the highest reward, and once the child is
recorded the oldest member beyond `population` is removed. Trial i's random numbers come from
Random(f"{seed}-{i}"), so proposals do not depend on process restarts.
"""

import contextlib
import fcntl
import json
import os
import random
import socket
import time
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
# Settings a resumed search may change.
RESUMABLE = ("trials",)


class SearchError(RuntimeError):
  """The search cannot go on (e.g. the GLaM baseline failed); the message says why."""


def default_config(**overrides) -> dict:
  """The search settings, see `brainformer search --help` and docs/search.md."""
  config = dict(space="mini", trials=40, population=10, tournament=3, seed=0,
                references=["glam", "dense", "block1"], operators=list(mutation.OPERATORS),
                budget_s=60.0, clock="wall", step_time_slack=1.1, loss_slack=0.0, time_weight=1.0,
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
  if config["tournament"] > config["population"]:
    raise ValueError(f"tournament={config['tournament']} must be <= population="
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


# ----------------------------------------------------------------------------- state file


@contextlib.contextmanager
def locked(search_dir: str):
  """Holds the search's exclusive lock."""
  os.makedirs(search_dir, exist_ok=True)
  with open(os.path.join(search_dir, LOCK), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def load(search_dir: str) -> Optional[dict]:
  path = os.path.join(search_dir, STATE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def save(search_dir: str, state: dict):
  path = os.path.join(search_dir, STATE)
  atomic.write_json(path, state, fsync=True)


def init(search_dir: str, config: dict) -> dict:
  """Creates the state, or checks that an existing one has the same settings (resume)."""
  with locked(search_dir):
    state = load(search_dir)
    if state is None:
      space = space_lib.get(config["space"])
      refs = space_lib.references(space)
      state = {"version": 1, "config": config, "trials": [], "population": [],
               "references": {name: _job(name, refs[name]) for name in config["references"]}}
    else:
      for key, value in config.items():
        if key not in RESUMABLE and state["config"].get(key) != value:
          raise ValueError(f"{key}={value!r} differs from the search being resumed in "
                           f"{search_dir} ({state['config'].get(key)!r}); use the same value "
                           f"or another --dir")
      state["config"]["trials"] = config["trials"]
      if state["references"]["glam"]["status"] == "failed":
        state["references"]["glam"]["status"] = "pending"  # retry a failed baseline
    save(search_dir, state)
  return state


def _job(job_id, candidate: Candidate, **extra) -> dict:
  return {"id": job_id, "candidate": candidate.to_json(), "status": "pending", "claim": None,
          "result": None, "reward": None, "attempts": 0, **extra}


def _alive(claim) -> bool:
  if claim["host"] != socket.gethostname():
    return True  # another machine's worker: only it can tell
  try:
    os.kill(claim["pid"], 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


# ----------------------------------------------------------------------------- evolution


def propose(state: dict, trial_id: int) -> Optional[dict]:
  """A new trial job (random or mutated tournament winner), or None if none can be made yet."""
  config = state["config"]
  space = space_lib.get(config["space"])
  rng = random.Random(f"{config['seed']}-{trial_id}")
  if trial_id < config["population"]:
    return _job(trial_id, space_lib.random_candidate(space, rng), parent=None, operator=None)
  members = [state["trials"][i] for i in state["population"]]
  if not members:
    return None  # every earlier trial still running: nothing to select from yet
  sample = rng.sample(members, min(config["tournament"], len(members)))
  parent = max(sample, key=lambda job: job["reward"])
  child, op = mutation.mutate(space, Candidate.from_json(parent["candidate"]), rng,
                              config["operators"])
  return _job(trial_id, child, parent=parent["id"], operator=op)


def add_to_population(state: dict, trial_id: int):
  """Appends the trial; removes the oldest members beyond the population size (aging)."""
  state["population"].append(trial_id)
  del state["population"][:max(0, len(state["population"]) - state["config"]["population"])]


def claim(state: dict, pid: int, host: str):
  """The job this worker should run next (marked running), WAIT or ALL_DONE."""
  refs = state["references"]
  jobs = list(refs.values()) + state["trials"]
  for job in jobs:
    if job["status"] == "running" and not _alive(job["claim"]):
      job["status"] = "pending"  # its process died: re-run from scratch
  ready = [j for j in refs.values() if j["status"] == "pending"]
  if refs["glam"]["status"] in FINISHED:
    ready += [j for j in state["trials"] if j["status"] == "pending"]
    if not ready and len(state["trials"]) < state["config"]["trials"]:
      job = propose(state, len(state["trials"]))
      if job is not None:
        state["trials"].append(job)
        ready = [job]
  if ready:
    job = ready[0]
    job.update(status="running", claim={"pid": pid, "host": host, "time": time.time()})
    job["attempts"] += 1
    return job
  if any(j["status"] == "running" for j in jobs) or refs["glam"]["status"] not in FINISHED:
    return WAIT
  return ALL_DONE


def thresholds(state: dict):
  """(max_step_time, max_loss) of the early stop, from the GLaM baseline."""
  config = state["config"]
  glam = state["references"]["glam"]["result"]
  if not glam or glam["status"] != "done":
    raise SearchError(f"the GLaM baseline failed ({(glam or {}).get('error')}); see "
                      f"references/glam/train.log; fix and run the search again")
  return (glam["step_time"] * config["step_time_slack"],
          glam["check"]["loss"] * (1 + config["loss_slack"]))


def score(state: dict, result: dict) -> float:
  if result["status"] != "done":
    return reward_lib.EARLY_STOP
  max_step_time, _ = thresholds(state)
  return reward_lib.reward(result["val_loss"], result["step_time"],
                           state["references"]["glam"]["result"]["val_loss"], max_step_time,
                           state["config"]["time_weight"])


def record(state: dict, job_id, result: dict):
  """Stores a finished job's result and reward; a trial joins the population."""
  is_ref = isinstance(job_id, str)
  job = state["references"][job_id] if is_ref else state["trials"][job_id]
  job.update(status=result["status"], result=result, claim=None)
  if is_ref:
    return job
  job["reward"] = score(state, result)
  add_to_population(state, job_id)
  return job


# ----------------------------------------------------------------------------- workers


def job_dir(search_dir: str, job_id) -> str:
  if isinstance(job_id, str):
    return os.path.join(search_dir, "references", job_id)
  return os.path.join(search_dir, "trials", f"trial_{job_id:04d}")


def work(search_dir: str, log: Callable[[str], None] = print, poll_s: float = 2.0) -> int:
  """Claims and runs jobs until the search is complete; returns how many this worker ran."""
  pid, host, ran = os.getpid(), socket.gethostname(), 0
  while True:
    with locked(search_dir):
      state = load(search_dir)
      job = claim(state, pid, host)
      if isinstance(job, dict):
        save(search_dir, state)
    if job == ALL_DONE:
      return ran
    if job == WAIT:
      time.sleep(poll_s)
      continue
    config = state["config"]
    space = space_lib.get(config["space"])
    settings = trial_lib.TrialSettings(
        budget_s=config["budget_s"], clock=config["clock"], recipe=config["recipe"],
        train_files=config["train_files"], validation_files=config["validation_files"],
        gin_params=config["gin_params"], timeout_s=config["timeout_s"])
    limits = (None, None) if isinstance(job["id"], str) else thresholds(state)
    what = f"reference {job['id']}" if isinstance(job["id"], str) else f"trial {job['id']}"
    log(f"{what}: training {Candidate.from_json(job['candidate'])} for "
        f"{config['budget_s']:g}s (attempt {job['attempts']})")
    result = trial_lib.run(job_dir(search_dir, job["id"]), space,
                           Candidate.from_json(job["candidate"]), settings, *limits)
    with locked(search_dir):
      state = load(search_dir)
      current = (state["references"][job["id"]] if isinstance(job["id"], str)
                 else state["trials"][job["id"]])
      if current["status"] != "running" or current["claim"]["pid"] != pid:
        continue  # reclaimed meanwhile (should not happen on one host); keep theirs
      done = record(state, job["id"], result)
      save(search_dir, state)
    ran += 1
    log(progress_line(state, done))
    if job["id"] == "glam":
      thresholds(state)  # a failed GLaM baseline stops the search: nothing compares to it


def progress_line(state: dict, job: dict) -> str:
  """One line per finished job: result, reward, the best so far, the block."""
  r = job["result"]
  if isinstance(job["id"], str):
    head = f"reference {job['id']:6s} {r['status']}"
  else:
    finished = sum(t["status"] in FINISHED for t in state["trials"])
    origin = (f"{job['operator']} of {job['parent']}" if job["parent"] is not None
              else "random")
    head = (f"trial {job['id']:3d} [{finished}/{state['config']['trials']}] ({origin}) "
            f"{r['status']} reward {job['reward']:+.3f}")
  numbers = (f"val {r['val_loss']:.4f} step {1000 * r['step_time']:.1f}ms x{r['steps']}"
             if r["val_loss"] is not None and r["step_time"] else "")
  if r.get("early_stop"):
    numbers += f" stopped: {r['early_stop']}"
  if r["status"] == "failed":
    numbers += f" error: {r.get('error', '')[:200]}"
  scored = [t for t in state["trials"] if t["reward"] is not None]
  best = (f" | best {max(t['reward'] for t in scored):+.3f} (trial "
          f"{max(scored, key=lambda t: t['reward'])['id']})" if scored else "")
  return f"{head} {numbers}{best} | {Candidate.from_json(job['candidate'])}"
