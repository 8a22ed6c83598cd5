"""`brainformer search`: evolutionary search of Brainformer blocks on PyGlove (docs/search.md).

Runs the baselines (GLaM, dense, Block 1 proxies) and then --trials candidate blocks, each
trained for --budget_s seconds by a `brainformer train` subprocess, proposed by PyGlove's
regularized evolution (or NSGA-II). State is in --dir/state.json after every trial: run the
same command again to resume. --workers N trains N trials at a time; --pin_cores gives each
its own CPU cores (and as many TF threads), so a trial's step time does not depend on the
others. Across machines: --serve runs the baselines here and serves the trials from an Open
Source Vizier server; workers anywhere join it with --vizier=HOST:PORT.
"""

import argparse
import os
import socket

from brainformer_tf.config import errors
from brainformer_tf.config import prepare
from brainformer_tf.search import report
from brainformer_tf.search import space
from brainformer_tf.search import study as study_lib
from brainformer_tf.search import vizier

PROG = "brainformer search"


def _parser():
  p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dir", required=True, help="search directory (state, trials, outputs)")
  p.add_argument("--space", default="mini", help="search space: table1, cpu, mini, tiny")
  p.add_argument("--trials", type=int, default=40, help="candidate trials (baselines excluded)")
  p.add_argument("--algorithm", default="regularized_evolution", choices=space.ALGORITHMS,
                 help="PyGlove's aging evolution (reward), or NSGA-II over (loss, step time)")
  p.add_argument("--budget_s", type=float, default=60.0,
                 help="training wall-clock per trial, seconds (after warm-up)")
  p.add_argument("--clock", default="wall", choices=["wall", "process"],
                 help="budget and step time in wall seconds, or in CPU seconds of the trial "
                 "process (fairer when other jobs share the machine)")
  p.add_argument("--population", type=int, default=10, help="population size")
  p.add_argument("--tournament", type=int, default=3, help="tournament sample size (>= 2)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--references", default="glam,dense,block1", type=_split,
                 help="baselines to measure first (glam is required)")
  p.add_argument("--operators", default=",".join(space.OPERATORS), type=_split,
                 help="comma-separated mutation operators")
  p.add_argument("--step_time_slack", type=float, default=1.1,
                 help="early stop if step time > GLaM's x this")
  p.add_argument("--loss_slack", type=float, default=0.0,
                 help="early stop if loss at the check > GLaM's x (1 + this)")
  p.add_argument("--time_weight", type=float, default=1.0, help="reward's step-time exponent")
  p.add_argument("--recipe", default="search/cpu_proxy.gin", help="trial training Gin file")
  p.add_argument("--train_files", default="", type=_split,
                 help="comma-separated text files (local_text_lm); empty: the embedded corpus")
  p.add_argument("--validation_files", default="", type=_split, help="comma-separated text files")
  p.add_argument("--gin_param", action="append", default=[], dest="gin_params",
                 help="extra Gin binding per trial")
  p.add_argument("--timeout_s", type=float, default=None, help="kill a trial after this long")
  p.add_argument("--workers", type=int, default=1, help="trials trained at a time here")
  p.add_argument("--pin_cores", action="store_true",
                 help="give each worker its own cores (available // --workers) and its trials "
                 "that many TF threads; pair with --clock=process")
  p.add_argument("--serve", action="store_true",
                 help="measure the baselines here, then serve the trials to workers from an "
                 "Open Source Vizier server on --host:--port (needs google-vizier)")
  p.add_argument("--host", default="localhost", help="--serve: the interface to listen on")
  p.add_argument("--port", type=int, default=28080, help="--serve: the port")
  p.add_argument("--vizier", default=None, metavar="HOST:PORT",
                 help="work on the trials of the search served there (search settings come "
                 "from the server; --dir holds this worker's trial directories)")
  p.add_argument("--study", default="search", help="the Vizier study name (--serve, --vizier)")
  p.add_argument("--worker_id", default=None,
                 help="--vizier: this worker's client id (default: host name); a worker "
                 "restarted with the same id re-runs its unfinished trial")
  p.add_argument("--top_k", type=int, default=3, help="best blocks written as Gin files")
  p.add_argument("--report_only", action="store_true", help="rewrite the outputs and stop")
  return p


def _split(value):
  return [x for x in value.split(",") if x]


def _files(flag, files):
  """Absolute paths (a resumed search may start elsewhere); ValueError names a missing file."""
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise ValueError(f"{flag}: no such file {os.path.abspath(missing[0])}")
  return [os.path.abspath(f) for f in files]


def worker_cores(workers, available):
  """The cores of each worker: len(available) // workers of them, in order."""
  available = sorted(available)
  per_worker = len(available) // workers
  if per_worker < 1:
    raise ValueError(f"--pin_cores: --workers={workers} needs at least {workers} cores; this "
                     f"process may use {len(available)}")
  return [available[i * per_worker:(i + 1) * per_worker] for i in range(workers)]


def _config(args):
  """The search settings: the flags named like default_config's keys."""
  config = {key: getattr(args, key) for key in study_lib.default_config()}
  return study_lib.default_config(**dict(
      config, train_files=_files("--train_files", args.train_files),
      validation_files=_files("--validation_files", args.validation_files)))


def run(argv) -> int:
  args = _parser().parse_args(argv[1:])
  log = lambda line: print(line, flush=True)
  try:
    if args.workers < 1:
      raise ValueError(f"--workers={args.workers}: must be >= 1")
    cores = (worker_cores(args.workers, os.sched_getaffinity(0)) if args.pin_cores
             else [None] * args.workers)
    if args.report_only:
      state = study_lib.load(args.dir)
      if state is None:
        raise ValueError(f"--dir={args.dir}: no {study_lib.STATE} (no search there)")
    else:
      prepare.check_writable_dir(args.dir, "--dir")
      if args.serve or args.vizier:
        vizier.modules()  # ValueError unless google-vizier is installed
      if args.vizier:
        if args.workers > 1:
          raise ValueError("--vizier runs one worker: start one process per worker, each with "
                           "its own --worker_id")
        worker_id = args.worker_id or socket.gethostname()
        ran = vizier.work(args.vizier, args.dir, args.study, worker_id, cores[0], log)
        log(f"worker {worker_id}: {ran} trial(s); the study has no more")
        return 0
      study = study_lib.Study(args.dir, _config(args), local_trials=not args.serve)
  except (ValueError, errors.UsageError) as e:
    return errors.report(PROG, e)
  if not args.report_only:
    if args.pin_cores:
      log(f"pinned workers to cores {cores}, {len(cores[0])} TF thread(s) per trial")
    try:
      if args.serve:
        state = vizier.serve(study, args.host, args.port, args.study, log)
      else:
        study_lib.run(study, cores, log)
        state = study.state
    except study_lib.SearchError as e:
      return errors.report(PROG, e)
  paths = report.write(args.dir, state, args.top_k)
  log("baselines and best block (same wall-clock budget):\n" + report.summary(state))
  log("outputs: " + ", ".join(paths.values()))
  return 0

