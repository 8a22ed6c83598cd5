"""benchmarks.moe_peer: the peer comparison is configured fairly and its plumbing works; no
timed assertions. The tests that need TF Model Garden skip where it is not installed."""

import json
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

from benchmarks import common
from benchmarks import moe_dispatch
from benchmarks import moe_overhead
from benchmarks import moe_peer
from benchmarks import moe_peer_keras
from benchmarks import summary

CELLS = [(8, 512), (8, 1024), (64, 512), (64, 1024)]   # the issue's (experts, group size)
BATCH, LENGTH = 8, 512
needs_peer = pytest.mark.skipif(moe_peer.peer_missing() is not None,
                                reason="tf-models-official is not installed "
                                       "(requirements/bench_peer.txt)")


def expected_routing(num_experts, group_size, capacity_factor=moe_overhead.CAPACITY):
  """Independent of both codebases: groups of group_size tokens (it divides the batch's
  tokens), each expert takes capacity_factor * group_size / num_experts of them (exact here)."""
  assert (BATCH * LENGTH) % group_size == 0
  slots = capacity_factor * group_size / num_experts
  assert slots == int(slots)
  return {"tokens_per_group": group_size, "capacity": int(slots)}


class _Built(Exception):
  """Stops time_fwd_bwd once the graph is built (nothing is run)."""


def ours_routing(num_experts, group_size):
  """The routing dims of this project's layer as benchmarks.moe_peer builds it."""
  found = {}

  def capture(graph):
    found.update(moe_peer.routing_dims(graph))
    raise _Built

  with pytest.raises(_Built):
    moe_dispatch.time_fwd_bwd(moe_overhead.layers(num_experts, group_size)["expert_choice"],
                              d_model=8, batch=BATCH, length=LENGTH, packed=True,
                              input_grad=True, on_graph=capture)
  return {"tokens_per_group": found["ours_tokens_per_group"],
          "capacity": found["ours_capacity"]}


@pytest.mark.parametrize("num_experts,group_size", CELLS)
def test_ours_routes_the_issue_cells_as_the_formula_says(num_experts, group_size):
  assert ours_routing(num_experts, group_size) == expected_routing(num_experts, group_size)
  epg = moe_peer_keras.examples_per_group(group_size, LENGTH)
  assert int(LENGTH * epg) == group_size   # the peer's tokens_per_group (MoeLayer.call)


@needs_peer
@pytest.mark.parametrize("num_experts,group_size", CELLS)
def test_peer_routes_the_issue_cells_as_ours(num_experts, group_size):
  """The Model Garden layer, built (not run) on the issue's input: its router is asked for
  the same tokens per group and per-expert capacity as ours, in train mode, without jitter."""
  seen = []
  layer = moe_peer_keras.moe_layer(num_experts, 8, moe_overhead.CAPACITY, group_size, LENGTH,
                                   seen)
  tf.enable_v2_tensorshape()   # Keras code compares static dims with Python numbers
  try:
    with tf.Graph().as_default():
      layer(tf.zeros([BATCH, LENGTH, 8]), training=True)
  finally:
    tf.disable_v2_tensorshape()   # as conftest's disable_v2_behavior left it
  want = expected_routing(num_experts, group_size)
  assert seen == [dict(want, training=True, jitter_noise=0.0)]


def test_missing_peer_package_is_one_line_and_exit_2():
  """`python -m benchmarks.moe_peer` without the package: the install command, exit 2."""
  code = ("import runpy, sys; sys.modules['official'] = None; sys.argv = ['moe_peer']; "
          "runpy.run_module('benchmarks.moe_peer', run_name='__main__')")
  proc = subprocess.run([sys.executable, "-c", code], cwd=common.ROOT, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stdout == ""
  lines = proc.stderr.splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("moe_peer: error: TF Model Garden (tf-models-official==2.15.0) "
                             "is not installed; install it with: ")
  assert lines[0].endswith(" -m pip install --no-deps -r requirements/bench_peer.txt")


def test_frameworks_alternate_over_cells_and_rounds():
  plan = moe_peer.cell_order([(8, 512), (64, 512)], rounds=2)
  assert [fw for *_, fw in plan] == ["ours", "peer", "peer", "ours",
                                     "peer", "ours", "ours", "peer"]
  assert moe_peer.thread_env(2, 1)["TF_NUM_INTRAOP_THREADS"] == "2"
  assert "TF_NUM_INTEROP_THREADS" not in moe_peer.thread_env(0, 0)


def test_summary_entry_takes_the_worst_cell():
  data = {"command": "c", "scale": "reduced", "rows": [
      {"num_experts": 8, "group_size": 512, "ours_over_peer": 0.3},
      {"num_experts": 64, "group_size": 512, "ours_over_peer": 0.6}],
      "machine": {"load_average": [3.0, 2.0, 1.0], "cores": 2}}
  entry = summary.peer_targets(data)["expert_choice_over_model_garden_moe"]
  assert entry["value"] == 0.6 and entry["target"] == 0.5 and not entry["met"]
  assert "load average 3.0" in entry["detail"]


@needs_peer
@pytest.mark.slow  # the peer's worker process imports TensorFlow and Keras
@pytest.mark.timeout(600)
def test_tiny_cell_gives_a_full_row():
  """Ours in this process, the peer in its worker process (TF2), on a tiny cell; the row
  carries every field of results/moe_peer.json's rows."""
  args = moe_peer.parse_args(["--batch", "2", "--length", "64", "--warmup", "1",
                              "--repeats", "1"])
  shapes = moe_peer.overhead_shapes()
  ours = moe_peer.measure_ours(4, 64, shapes, batch=2, length=64, warmup=1, repeats=1)
  ours["load_average"] = [0.0]
  peer = moe_peer.run_worker("peer", 4, 64, shapes, args, moe_peer.thread_env(0, 0))
  row = moe_peer.cell_row(4, 64, 128, [ours, peer], peak_gflops=100.0, d_model=shapes.d_model,
                          dense_hidden=int(shapes.capacity_factor * shapes.hidden))
  assert set(row) == {
      "num_experts", "group_size", "tokens", "ours_s", "ours_dense_s", "peer_s",
      "peer_dense_s", "ours_tokens_per_group", "ours_capacity", "peer_tokens_per_group",
      "peer_capacity", "peer_train_mode", "peer_jitter_noise", "peer_repeatable",
      "same_routing", "ours_over_peer", "ours_over_ours_dense", "peer_over_peer_dense",
      "ours_dense_fraction_of_peak", "peer_dense_fraction_of_peak", "load_average"}
  assert row["same_routing"] and row["peer_capacity"] == 32 and row["peer_train_mode"]
  assert row["peer_repeatable"] and row["peer_jitter_noise"] == 0.0
  assert all(row[k] > 0 for k in ("ours_s", "ours_dense_s", "peer_s", "peer_dense_s"))
  json.dumps(row)
