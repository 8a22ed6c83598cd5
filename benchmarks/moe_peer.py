"""This project's expert-choice MoE next to a peer's: TF Model Garden's MoeLayer (experts choose).

  .venv/bin/python -m benchmarks.moe_peer [--experts 8,64] [--groups 512,1024] [--rounds 2]

Needs the optional peer package: `.venv/bin/python -m pip install --no-deps -r
requirements/bench_peer.txt` (without it this prints that command and exits 2).

Per (experts, group size) cell, on the same 8 x 512 x 256 input (expert hidden 512, capacity
factor 2), forward+backward (loss = sum(y^2), gradients w.r.t. the input and all weights):
  ours        brainformer_tf MoE, expert_choice, gather dispatch (as benchmarks/moe_overhead),
              mesh-tf graph in a tf.Session with Grappler on (moe_dispatch.time_fwd_bwd)
  ours_dense  mesh-tf DenseReluDense, hidden 2 x 512: ours' equal-activated-FLOPs baseline
  peer        official.nlp.modeling.layers.moe.MoeLayer + ExpertsChooseMaskedRouter +
              FeedForwardExperts (ReLU), examples_per_group = group / length so that its groups
              hold the same tokens as ours, train mode, jitter and dropout off, Keras under
              tf.function(jit_compile=False) (benchmarks/moe_peer_keras.py)
  peer_dense  Keras Dense-ReLU-Dense, hidden 2 x 512: the peer's own baseline
Each framework runs in a fresh interpreter per cell and round (they cannot share one: mesh-tf
needs TF1 graph mode), with the same environment (thread settings, oneDNN); the order of the
two alternates over cells and rounds. A worker times --warmup runs, then the best of --repeats;
a cell keeps the best over --rounds. Both workers report the tokens per routing group and the
per-expert capacity their router was actually given (same_routing). The fp32 matmul peak
(benchmarks/peak.py, before and after) and the CPU's SIMD flags are recorded in the same run.
Writes results/moe_peer.json and updates results/summary.json (target: ours <= 0.5 x peer).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional

from brainformer_tf.config import errors

PEER_PACKAGE = "tf-models-official==2.15.0"
REQUIREMENTS = "requirements/bench_peer.txt"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("ours", "peer")


class Shapes(NamedTuple):
  """The layer shapes both workers build: model width, expert hidden, capacity factor."""
  d_model: int
  hidden: int
  capacity_factor: float


def overhead_shapes() -> Shapes:
  """benchmarks/moe_overhead's layer shapes (the issue's), which both frameworks use here."""
  from benchmarks import moe_overhead  # pylint: disable=g-import-not-at-top  (imports mesh-tf)
  return Shapes(moe_overhead.D_MODEL, moe_overhead.HIDDEN, moe_overhead.CAPACITY)


def peer_missing() -> Optional[str]:
  """None when TF Model Garden's MoE module is installed, else the one line to print.
  Looks for the files without importing them (`official` imports TensorFlow)."""
  spec = importlib.util.find_spec("official")
  locations = (spec.submodule_search_locations or []) if spec else []
  if any(os.path.isfile(os.path.join(l, "nlp", "modeling", "layers", "moe.py"))
         for l in locations):
    return None
  return (f"TF Model Garden ({PEER_PACKAGE}) is not installed; install it with: "
          f"{sys.executable} -m pip install --no-deps -r {REQUIREMENTS}")


def cell_order(cells: List[tuple], rounds: int) -> List[tuple]:
  """[(round, experts, group, framework)]: ours/peer order flips from cell to cell and from
  round to round, so drift of a loaded machine hits both frameworks alike."""
  plan = []
  for r in range(rounds):
    for i, (e, g) in enumerate(cells):
      order = FRAMEWORKS if (r + i) % 2 == 0 else tuple(reversed(FRAMEWORKS))
      plan += [(r, e, g, fw) for fw in order]
  return plan


def thread_env(intra_op: int, inter_op: int) -> Dict[str, str]:
  """The environment of both workers: TF's thread pools from TF_NUM_*_THREADS (read by the
  session runtime and by eager/tf.function alike); 0 leaves TF's default (all cores)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  for name, value in (("TF_NUM_INTRAOP_THREADS", intra_op), ("TF_NUM_INTEROP_THREADS", inter_op)):
    env.pop(name, None)
    if value:
      env[name] = str(value)
  return env


def routing_dims(graph) -> Dict[str, int]:
  """Tokens per routing group ("group" dim) and per-expert capacity ("expert_capacity") of
  this project's MoE, read off the built mtf graph."""
  sizes = {"group": set(), "expert_capacity": set()}
  for op in graph.operations:
    for t in op.outputs:
      for d in t.shape.dims:
        if d.name in sizes:
          sizes[d.name].add(d.size)
  if any(len(s) != 1 for s in sizes.values()):
    raise RuntimeError(f"expected one routing group and one capacity size, got {sizes}")
  return {"ours_tokens_per_group": sizes["group"].pop(),
          "ours_capacity": sizes["expert_capacity"].pop()}


def measure_ours(num_experts: int, group_size: int, shapes: Shapes, *, batch: int,
                 length: int, warmup: int, repeats: int) -> Dict:
  """ours_s / ours_dense_s of one cell (moe_overhead's layers) and the routing it built."""
  from benchmarks import moe_dispatch  # pylint: disable=g-import-not-at-top
  from benchmarks import moe_overhead  # pylint: disable=g-import-not-at-top
  if shapes != overhead_shapes():
    raise ValueError(f"ours runs moe_overhead's shapes {overhead_shapes()}, not {shapes}")
  makes = moe_overhead.layers(num_experts, group_size)
  row = {}
  shape = dict(d_model=shapes.d_model, batch=batch, length=length, packed=True, input_grad=True)
  with moe_dispatch.fwd_bwd_runner(makes["expert_choice"], **shape,
                                   on_graph=lambda g: row.update(routing_dims(g))) as ours, \
      moe_dispatch.fwd_bwd_runner(makes["dense"], **shape) as dense:
    seconds = moe_dispatch.interleaved({"ours_s": ours, "ours_dense_s": dense}, warmup, repeats)
  return dict(row, **seconds)


def measure_peer(num_experts: int, group_size: int, shapes: Shapes, *, batch: int,
                 length: int, warmup: int, repeats: int) -> Dict:
  """peer_s / peer_dense_s of one cell (benchmarks/moe_peer_keras.py; no mesh-tf import)."""
  from benchmarks import moe_peer_keras  # pylint: disable=g-import-not-at-top
  return moe_peer_keras.measure_cell(
      num_experts, group_size, d_model=shapes.d_model, hidden=shapes.hidden,
      capacity_factor=shapes.capacity_factor, batch=batch, length=length, warmup=warmup,
      repeats=repeats)


def run_worker(framework: str, num_experts: int, group_size: int, shapes: Shapes, args,
               env) -> Dict:
  """One measurement in a fresh interpreter; its last stdout line is the JSON result."""
  cmd = [sys.executable, "-m", "benchmarks.moe_peer", "--worker", framework,
         "--shapes", ",".join(str(v) for v in shapes),
         "--experts", str(num_experts), "--groups", str(group_size), "--batch", str(args.batch),
         "--length", str(args.length), "--warmup", str(args.warmup),
         "--repeats", str(args.repeats)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{framework} worker failed ({' '.join(cmd[1:])}):\n"
                       f"{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result["load_average"] = list(os.getloadavg())
  return result


def cell_row(num_experts: int, group_size: int, tokens: int, runs: List[Dict],
             peak_gflops: float, d_model: int, dense_hidden: int) -> Dict:
  """Best over rounds of each time, the ratios, the routing check and the dense GFLOP/s."""
  row = {"num_experts": num_experts, "group_size": group_size, "tokens": tokens}
  for key in ("ours_s", "ours_dense_s", "peer_s", "peer_dense_s"):
    row[key] = min(r[key] for r in runs if key in r)
  for r in runs:  # routing and mode facts (the same in every round)
    row.update({k: v for k, v in r.items() if not k.endswith("_s") and k != "load_average"})
  row["peer_repeatable"] = all(r["peer_repeatable"] for r in runs if "peer_repeatable" in r)
  row["same_routing"] = (row["ours_tokens_per_group"] == row["peer_tokens_per_group"]
                         and row["ours_capacity"] == row["peer_capacity"])
  row["ours_over_peer"] = row["ours_s"] / row["peer_s"]
  row["ours_over_ours_dense"] = row["ours_s"] / row["ours_dense_s"]
  row["peer_over_peer_dense"] = row["peer_s"] / row["peer_dense_s"]
  # dense fwd+bwd with the input gradient: 6 matmuls of 2 * tokens * d_model * hidden FLOPs
  dense_flops = 6 * 2 * tokens * d_model * dense_hidden
  for fw in FRAMEWORKS:
    row[f"{fw}_dense_fraction_of_peak"] = dense_flops / row[f"{fw}_dense_s"] / (peak_gflops * 1e9)
  row["load_average"] = [r["load_average"][0] for r in runs]
  return row


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--experts", default="8,64")
  p.add_argument("--groups", default="512,1024")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--length", type=int, default=512)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2,
                 help="untimed runs first (>= 1: the first run traces / optimises the graph)")
  p.add_argument("--rounds", type=int, default=2,
                 help="fresh worker pairs per cell, order alternating; the best round counts")
  p.add_argument("--intra_op_threads", type=int, default=0, help="0: TF's default (all cores)")
  p.add_argument("--inter_op_threads", type=int, default=0, help="0: TF's default (all cores)")
  p.add_argument("--scale", default="full")
  p.add_argument("--out", default="moe_peer.json")
  p.add_argument("--no_summary", action="store_true", help="leave results/summary.json alone")
  p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
  p.add_argument("--shapes", help=argparse.SUPPRESS)  # a worker's d_model,hidden,capacity
  args = p.parse_args(argv)
  if args.warmup < 1:
    p.error("--warmup must be at least 1 (the first run includes graph tracing)")
  return args


def command(args) -> str:
  return (f"python -m benchmarks.moe_peer --experts {args.experts} --groups {args.groups} "
          f"--batch {args.batch} --length {args.length} --repeats {args.repeats} "
          f"--warmup {args.warmup} --rounds {args.rounds}")


def run(args) -> Dict:
  """The whole comparison: peaks, alternating workers, rows; returns the results dict."""
  from benchmarks import common  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  from benchmarks import peak  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  env = thread_env(args.intra_op_threads, args.inter_op_threads)
  shapes = overhead_shapes()
  machine = common.machine_info()
  peaks = [peak.measure_in_subprocess("default")]
  cells = [(int(e), int(g)) for e in args.experts.split(",") for g in args.groups.split(",")]
  runs = {cell: [] for cell in cells}
  for r, e, g, fw in cell_order(cells, args.rounds):
    result = run_worker(fw, e, g, shapes, args, env)
    print(f"round {r} experts {e} group {g} {fw}: "
          + " ".join(f"{k}={v:.4f}" for k, v in result.items() if k.endswith("_s")), flush=True)
    runs[(e, g)].append(result)
  peaks.append(peak.measure_in_subprocess("default"))
  best_peak = max(p["gflops"] for p in peaks)
  rows = [cell_row(e, g, args.batch * args.length, runs[(e, g)], best_peak, shapes.d_model,
                   int(shapes.capacity_factor * shapes.hidden)) for e, g in cells]
  return {"benchmark": "moe_peer", "scale": args.scale, "machine": machine,
          "load_average_end": list(os.getloadavg()), "command": command(args),
          "peer": {"package": f"tf-models-official=={metadata.version('tf-models-official')}",
                   "layer": "official.nlp.modeling.layers.moe.MoeLayer + "
                            "ExpertsChooseMaskedRouter + FeedForwardExperts (relu)"},
          "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads,
                      "note": "0 = TF's default (all cores); same for both workers"},
          "matmul_peak": {"gflops": best_peak, "runs": peaks},
          "what": "best-of-repeats (and of rounds) forward+backward seconds, gradients w.r.t. "
                  "input and weights; ours_over_peer = ours_s / peer_s; *_over_*_dense = each "
                  "layer over its own framework's dense FFN of equal activated FLOPs",
          "d_model": shapes.d_model, "expert_hidden": shapes.hidden,
          "capacity_factor": shapes.capacity_factor, "rows": rows}


def main(argv=None) -> int:
  args = parse_args(argv)
  missing = peer_missing()
  if missing:
    return errors.report("moe_peer", errors.UsageError(missing))
  if args.worker:
    measure = measure_ours if args.worker == "ours" else measure_peer
    d_model, hidden, capacity = args.shapes.split(",")
    shapes = Shapes(int(d_model), int(hidden), float(capacity))
    print(json.dumps(measure(int(args.experts), int(args.groups), shapes, batch=args.batch,
                             length=args.length, warmup=args.warmup, repeats=args.repeats)))
    return 0
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from benchmarks import summary  # pylint: disable=g-import-not-at-top
  data = run(args)
  for row in data["rows"]:
    print(f"experts {row['num_experts']:3d} group {row['group_size']:5d}: ours "
          f"{row['ours_s']:.3f}s ({row['ours_over_ours_dense']:.2f}x its dense)  peer "
          f"{row['peer_s']:.3f}s ({row['peer_over_peer_dense']:.2f}x its dense)  ours/peer "
          f"{row['ours_over_peer']:.2f}  same routing: {row['same_routing']}")
  print(f"wrote {common.write_json(args.out, data)}")
  if not args.no_summary:
    summary.update()
  return 0


if __name__ == "__main__":
  sys.exit(main())
