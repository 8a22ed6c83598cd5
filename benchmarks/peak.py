"""Best-of-N matmul throughput of this machine with TensorFlow: the MFU denominator.

    python -m benchmarks.peak [--size 1024] [--repeats 30] [--onednn on|off|default]
                              [--dtype float32|bfloat16] [--per_run 1]

Runs in graph mode like Mesh-TF, on TF's default device (a GPU where one is visible). Every
timed run multiplies a different pair of pre-generated random matrices (held in variables, so
Grappler cannot fold or cache the products); only a scalar sum of each product is fetched.
--per_run N multiplies N pairs in one session.run (on a GPU one product of a large size takes
about as long as the session call around it). oneDNN must be chosen before TensorFlow is
imported, so `measure_in_subprocess` runs each setting in its own interpreter. Prints one JSON
object: {"gflops": best, "median_gflops": ..., "size": n, "dtype": ..., "onednn": ...,
"threads": ...}. float32 matmuls on NVIDIA GPUs since Ampere use TF32 (TF's default), as the
training runs' do; "tf32" records whether that was on.
"""

import argparse
import json
import os
import subprocess
import sys
import time

_PAIRS = 4


def measure(size: int = 1024, repeats: int = 30, dtype: str = "float32",
            per_run: int = 1) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  rng = np.random.RandomState(0)
  if not 1 <= per_run <= _PAIRS:
    raise ValueError(f"per_run must be 1..{_PAIRS}, got {per_run}")
  with tf.Graph().as_default():
    pairs = [tuple(tf.Variable(tf.cast(rng.randn(size, size).astype(np.float32), dtype))
                   for _ in range(2)) for _ in range(_PAIRS)]
    products = [tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)) for a, b in pairs]
    sums = [tf.add_n([products[(i + j) % _PAIRS] for j in range(per_run)])
            for i in range(_PAIRS)]
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      for s in sums:
        session.run(s)  # warm-up
      seconds = []
      for i in range(repeats):
        start = time.perf_counter()
        session.run(sums[i % _PAIRS])
        seconds.append(time.perf_counter() - start)
  flops = 2.0 * size ** 3 * per_run
  seconds.sort()
  return {"gflops": flops / seconds[0] / 1e9,
          "median_gflops": flops / seconds[len(seconds) // 2] / 1e9,
          "size": size, "repeats": repeats, "dtype": dtype, "per_run": per_run,
          "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
          "onednn": _onednn_state(), "threads": os.cpu_count()}


def _onednn_state() -> str:
  value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
  if value is None:
    return "default"
  return "on" if value == "1" else "off"


def measure_in_subprocess(onednn: str, size: int = 1024, repeats: int = 30,
                          dtype: str = "float32", per_run: int = 1,
                          env: dict = None) -> dict:
  """Runs `measure` in a fresh interpreter with TF_ENABLE_ONEDNN_OPTS set for `onednn`
  (and the variables of `env` on top of this process's environment)."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
  env.pop("TF_ENABLE_ONEDNN_OPTS", None)
  if onednn in ("on", "off"):
    env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
  out = subprocess.run(
      [sys.executable, "-m", "benchmarks.peak", "--size", str(size), "--repeats", str(repeats),
       "--dtype", dtype, "--per_run", str(per_run)],
      env=env, capture_output=True, text=True, check=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  parser.add_argument("--per_run", type=int, default=1, help=f"products per timed run (1-{_PAIRS})")
  parser.add_argument("--onednn", choices=["on", "off", "default"], default=None,
                      help="run in a subprocess with oneDNN forced on/off")
  args = parser.parse_args()
  if args.onednn:
    result = measure_in_subprocess(args.onednn, args.size, args.repeats, args.dtype, args.per_run)
  else:
    result = measure(args.size, args.repeats, args.dtype, args.per_run)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
