"""Search outputs, rebuilt from the state at any time (`brainformer search --report_only`):
search_log.json (settings, baselines, every trial, the ranking and the Pareto front over
validation loss and step time), search.png (reward and validation loss per trial, baselines as
lines) and top/rank<k>_trial<i>.gin: the k best finished (not early-stopped) blocks as proxy
model files, and as _2x / _4x files (ScaleModelDim 2x / 4x, StackNTimes 6 / 8: the paper's 1B
and 8B scales). Also the progress line of a finished job.
"""

import glob
import itertools
import os
import pathlib

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from brainformer_tf import atomic
from brainformer_tf.search import space as space_lib
from brainformer_tf.search import trial as trial_lib

SCALES = ((2, 6), (4, 8))  # (ScaleModelDim factor, StackNTimes)


def ranked(state: dict):
  """Finished trials with a reward, best first (ties: the earlier trial)."""
  scored = [t for t in state["trials"] if t["reward"] is not None]
  return sorted(scored, key=lambda t: (-t["reward"], t["id"]))


def pareto(state: dict):
  """Ids of the finished trials no other finished trial beats in both val loss and step time."""
  done = [t for t in state["trials"] if t["status"] == "done"]
  point = lambda t: (t["result"]["val_loss"], t["result"]["step_time"])
  dominated = lambda a, b: point(b) != point(a) and all(y <= x for x, y in zip(point(a), point(b)))
  return [t["id"] for t in done if not any(dominated(t, other) for other in done)]


def write(search_dir: str, state: dict, top_k: int = 3) -> dict:
  """Writes every output of the search `state` into search_dir; returns {name: path}."""
  space = space_lib.get(state["config"]["space"])
  paths = {"log": os.path.join(search_dir, "search_log.json")}
  atomic.write_json(paths["log"], {
      "config": state["config"], "references": state["references"], "trials": state["trials"],
      "ranking": [t["id"] for t in ranked(state)], "pareto": pareto(state)})
  top_dir = os.path.join(search_dir, "top")
  os.makedirs(top_dir, exist_ok=True)
  for old in glob.glob(os.path.join(top_dir, "rank*.gin")):  # the ranking may have changed
    os.remove(old)
  top = [t for t in ranked(state) if t["status"] == "done"][:top_k]  # no early-stopped blocks
  for rank, job in enumerate(top, 1):
    title = f"rank {rank}, trial {job['id']}, reward {job['reward']:.4f}"
    for suffix, scale, stack in [("", 1, None)] + [(f"_{s}x", s, n) for s, n in SCALES]:
      path = os.path.join(top_dir, f"rank{rank}_trial{job['id']}{suffix}.gin")
      pathlib.Path(path).write_text(trial_lib.model_gin(
          space, space_lib.Candidate.from_json(job["candidate"]), stack, scale,
          title + (suffix and f", scaled {scale}x, stacked {stack}x")))
      paths[f"rank{rank}{suffix}"] = path
  paths["plot"] = plot(state, os.path.join(search_dir, "search.png"))
  return paths


def plot(state: dict, path: str) -> str:
  matplotlib.use("Agg")
  trials = [t for t in state["trials"] if t["reward"] is not None]
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
  ids, rewards = [t["id"] for t in trials], [t["reward"] for t in trials]
  top.scatter(ids, rewards, c=["tab:red" if r < 0 else "tab:blue" for r in rewards], s=18)
  top.step(ids, list(itertools.accumulate(rewards, max)), where="post", color="black",
           label="best so far")
  top.axhline(1.0, color="tab:orange", ls="--", label="GLaM (reward 1 by definition)")
  top.set(ylabel="reward (-1 = early stop)")
  top.legend(loc="lower right")
  done = [t for t in trials if t["result"]["val_loss"] is not None]
  bottom.scatter([t["id"] for t in done], [t["result"]["val_loss"] for t in done], s=18,
                 c=["tab:red" if t["reward"] < 0 else "tab:blue" for t in done],
                 label="trial (red: early-stopped)")
  colors = {"glam": "tab:orange", "dense": "tab:green", "block1": "tab:purple"}
  for name, job in state["references"].items():
    if job["result"] and job["result"]["val_loss"] is not None:
      bottom.axhline(job["result"]["val_loss"], color=colors[name], ls="--",
                     label=f"{name} {job['result']['val_loss']:.3f}")
  bottom.set(xlabel="trial", ylabel="validation log-perplexity",
             xlim=(-0.5, max(ids, default=0) + 0.5))
  bottom.legend(loc="upper right", fontsize=8)
  bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
  for ax in (top, bottom):
    ax.grid(alpha=0.3)
  fig.suptitle(f"brainformer search, space {state['config']['space']}, "
               f"{state['config']['budget_s']:g}s per trial")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def numbers(result: dict) -> str:
  """'val <loss> step <ms>ms x<steps>' of a job's result; '' without a validation loss."""
  if result.get("val_loss") is None or not result.get("step_time"):
    return ""
  return (f"val {result['val_loss']:.4f} step {1000 * result['step_time']:.1f}ms "
          f"x{result['steps']}")


def summary(state: dict) -> str:
  """Best block against the baselines: val loss and step time, same wall-clock budget."""
  lines = [f"  {name:7s} {numbers(job['result'])}  "
           f"{space_lib.Candidate.from_json(job['candidate'])}"
           for name, job in state["references"].items() if numbers(job["result"] or {})]
  for best in ranked(state)[:1]:  # none before the first trial finished
    lines.append(f"  best    trial {best['id']} reward {best['reward']:+.4f}  "
                 f"{numbers(best['result']) or best['status']}  "
                 f"{space_lib.Candidate.from_json(best['candidate'])}")
  front = sorted(pareto(state), key=lambda i: state["trials"][i]["result"]["step_time"])
  if front:
    lines.append(f"  Pareto front (val loss, step time), fastest first: trials {front}")
  return "\n".join(lines)


def progress_line(state: dict, job: dict) -> str:
  """One line per finished job of a local study: result, reward, the best so far, the block."""
  r = job["result"]
  if isinstance(job["id"], str):
    head = f"reference {job['id']:6s} {r['status']}"
  else:
    origin = f"{job['operator']} of {job['parent']}" if job["parent"] is not None else "random"
    head = (f"trial {job['id']:3d} [{len(state['finished'])}/{state['config']['trials']}] "
            f"({origin}) {r['status']} reward {job['reward']:+.3f}")
  tail = f" stopped: {r['early_stop']}" if r.get("early_stop") else ""
  if r["status"] == "failed":
    tail += f" error: {r.get('error', '')[:200]}"
  best = ranked(state)[:1]
  best = f" | best {best[0]['reward']:+.3f} (trial {best[0]['id']})" if best else ""
  return f"{head} {numbers(r)}{tail}{best} | {space_lib.Candidate.from_json(job['candidate'])}"
