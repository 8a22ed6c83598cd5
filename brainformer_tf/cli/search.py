"""`brainformer search`: regularized evolution of Brainformer blocks (docs/search.md).

Runs the baselines (GLaM, dense, Block 1 proxies) and then --trials candidate blocks, each
trained for --budget_s seconds of wall-clock by a `brainformer train` subprocess. State is in
--dir/state.json after every trial: run the same command again to resume. --workers N runs N
worker processes; more workers (here or on another shell) can join with --join. --pin_cores
gives each of those workers its own CPU cores (and its trials as many TF threads), so a trial's
step time does not depend on what the other workers run.
"""

import argparse
import os
import subprocess
import sys

from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.search import evolution
from brainformer_tf.search import mutation
from brainformer_tf.search import report
from brainformer_tf.search import trial

PROG = "brainformer search"


def _parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dir", required=True, help="search directory (state, trials, outputs)")
  p.add_argument("--space", default="mini", help="search space: table1, cpu, mini, tiny")
  p.add_argument("--trials", type=int, default=40, help="candidate trials (baselines excluded)")
  p.add_argument("--budget_s", type=float, default=60.0,
                 help="training wall-clock per trial, seconds (after warm-up)")
  p.add_argument("--clock", default="wall", choices=["wall", "process"],
                 help="budget and step time in wall seconds, or in CPU seconds of the trial "
                 "process (fairer when other jobs share the machine)")
  p.add_argument("--population", type=int, default=10, help="aging population size")
  p.add_argument("--tournament", type=int, default=3, help="tournament sample size")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--references", default="glam,dense,block1",
                 help="baselines to measure first (glam is required)")
  p.add_argument("--operators", default=None, help="comma-separated mutation operators")
  p.add_argument("--step_time_slack", type=float, default=1.1,
                 help="early stop if step time > GLaM's x this")
  p.add_argument("--loss_slack", type=float, default=0.0,
                 help="early stop if loss at the check > GLaM's x (1 + this)")
  p.add_argument("--time_weight", type=float, default=1.0, help="reward's step-time exponent")
  p.add_argument("--recipe", default="search/cpu_proxy.gin", help="trial training Gin file")
  p.add_argument("--train_files", default="", help="comma-separated text files (local_text_lm); "
                 "empty: the embedded default corpus")
  p.add_argument("--validation_files", default="", help="comma-separated text files")
  p.add_argument("--gin_param", action="append", default=[], help="extra Gin binding per trial")
  p.add_argument("--timeout_s", type=float, default=None, help="kill a trial after this long")
  p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
  p.add_argument("--pin_cores", action="store_true",
                 help="give each worker started here its own cores (available // --workers) and "
                 "its trials that many TF threads; pair with --clock=process")
  p.add_argument("--join", action="store_true",
                 help="only work on the search already in --dir (no outputs at the end)")
  p.add_argument("--top_k", type=int, default=3, help="best blocks written as Gin files")
  p.add_argument("--report_only", action="store_true", help="rewrite the outputs and stop")
  return p


def _files(flag, value):
  """Absolute paths (a resumed search may start elsewhere); ValueError names a missing file."""
  files = [os.path.abspath(f) for f in value.split(",") if f]
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise ValueError(f"{flag}: no such file {missing[0]}")
  return files


def worker_cores(workers, available):
  """The cores of each worker: len(available) // workers of them, in order."""
  available = sorted(available)
  per_worker = len(available) // workers
  if per_worker < 1:
    raise ValueError(f"--pin_cores: --workers={workers} needs at least {workers} cores; this "
                     f"process may use {len(available)}")
  return [available[i * per_worker:(i + 1) * per_worker] for i in range(workers)]


def thread_env(threads):
  """Environment that limits TF (and OpenMP) in a trial subprocess to `threads` threads."""
  return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
          "OMP_NUM_THREADS": str(threads)}


def _config(args):
  split = lambda s: [x for x in s.split(",") if x]
  return evolution.default_config(
      space=args.space, trials=args.trials, population=args.population,
      tournament=args.tournament, seed=args.seed, references=split(args.references),
      operators=split(args.operators) if args.operators else list(mutation.OPERATORS),
      budget_s=args.budget_s, clock=args.clock, step_time_slack=args.step_time_slack,
      loss_slack=args.loss_slack, time_weight=args.time_weight, recipe=args.recipe,
      train_files=_files("--train_files", args.train_files),
      validation_files=_files("--validation_files", args.validation_files),
      gin_params=args.gin_param, timeout_s=args.timeout_s)


def run(argv) -> int:
  args = _parser().parse_args(argv[1:])
  if args.workers < 1:
    return errors.report(PROG, ValueError(f"--workers={args.workers}: must be >= 1"))
  log = lambda line: print(line, flush=True)
  cores = [None] * args.workers
  if args.pin_cores:
    try:
      cores = worker_cores(args.workers, os.sched_getaffinity(0))
    except ValueError as e:
      return errors.report(PROG, e)
  if not args.report_only:
    try:
      prepare.check_writable_dir(args.dir, "--dir")
      if args.join:
        if evolution.load(args.dir) is None:
          raise ValueError(f"--join: no search in --dir={args.dir}")
      else:
        evolution.init(args.dir, _config(args))
    except (ValueError, errors.UsageError) as e:
      return errors.report(PROG, e)
    if args.pin_cores:
      os.environ.update(thread_env(len(cores[0])))  # trials inherit env and affinity
      log(f"pinned workers to cores {cores}, {len(cores[0])} TF thread(s) per trial")

    def start_helper(cpus):
      def preexec():
        trial.die_with_parent()
        if cpus:
          os.sched_setaffinity(0, cpus)
      return subprocess.Popen([sys.executable, "-m", "brainformer_tf.cli.main", "search",
                               f"--dir={args.dir}", "--join"], preexec_fn=preexec)

    helpers = [start_helper(cpus) for cpus in cores[1:]]
    if cores[0]:
      os.sched_setaffinity(0, cores[0])
    try:
      evolution.work(args.dir, log)
    except evolution.SearchError as e:
      return errors.report(PROG, e)
    for helper in helpers:
      helper.wait()
    if args.join:
      return 0
  paths = report.write(args.dir, args.top_k)
  log("baselines and best block (same wall-clock budget):\n"
      + report.summary(evolution.load(args.dir)))
  log("outputs: " + ", ".join(paths.values()))
  return 0
