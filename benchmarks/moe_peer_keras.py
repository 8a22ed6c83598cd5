"""The peer side of benchmarks/moe_peer.py: TF Model Garden's expert-choice MoeLayer in Keras.

Runs in an interpreter of its own (TF2, the peer's framework; mesh-tf is never imported here):
`official.nlp.modeling.layers.moe.MoeLayer` with `ExpertsChooseMaskedRouter` and
`FeedForwardExperts` (ReLU), in train mode with the router's jitter noise and the experts'
dropout off, the router's metrics export off (monitoring only, as this project's summaries are
not fetched either); and a Keras Dense-ReLU-Dense of hidden capacity_factor x expert hidden
(the same activated FLOPs). Both are timed forward+backward, gradients w.r.t. the input and all
weights, compiled with tf.function(jit_compile=False).
"""

import time
from typing import Dict, List

import numpy as np
import tensorflow as tf


def examples_per_group(group_size: int, length: int) -> float:
  """The MoeLayer setting whose groups hold `group_size` tokens of `length`-token examples."""
  return group_size / length


def moe_layer(num_experts: int, hidden: int, capacity_factor: float, group_size: int,
              length: int, seen: List[Dict]):
  """The Model Garden MoeLayer; its router appends what it was asked for to `seen`
  (tokens_per_group, expert_capacity, training) on every call."""
  from official.nlp.modeling.layers import moe  # pylint: disable=g-import-not-at-top

  class RecordingRouter(moe.ExpertsChooseMaskedRouter):
    """ExpertsChooseMaskedRouter that records the routing problem of each call."""

    def call(self, inputs, *, expert_capacity, training=None):
      seen.append({"tokens_per_group": int(inputs.shape[1]), "capacity": int(expert_capacity),
                   "training": bool(training), "jitter_noise": self.jitter_noise})
      return super().call(inputs, expert_capacity=expert_capacity, training=training)

  experts = moe.FeedForwardExperts(num_experts, hidden, activation=tf.nn.relu,
                                   inner_dropout=0.0, output_dropout=0.0)
  router = RecordingRouter(num_experts, jitter_noise=0.0, export_metrics=False)
  return moe.MoeLayer(experts, router, train_capacity_factor=capacity_factor,
                      eval_capacity_factor=capacity_factor,
                      examples_per_group=examples_per_group(group_size, length))


def dense_ffn(hidden: int, d_model: int) -> tf.keras.layers.Layer:
  """Keras Dense-ReLU-Dense (with biases, like the Model Garden experts)."""
  return tf.keras.Sequential([tf.keras.layers.Dense(hidden, activation="relu"),
                              tf.keras.layers.Dense(d_model)])


def time_fwd_bwd(layer, d_model: int, batch: int, length: int, warmup: int,
                 repeats: int) -> Dict:
  """Best-of-`repeats` seconds (after `warmup` runs) of loss = sum(y^2) and its gradients
  w.r.t. the input and every trainable weight, fetched as numpy like a session.run; and
  whether every run gave the same loss (no noise in train mode)."""
  x = tf.constant(np.random.RandomState(0).randn(batch, length, d_model).astype(np.float32))
  layer(x, training=True)  # builds the weights
  weights = layer.trainable_variables

  @tf.function(jit_compile=False)
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.square(layer(x, training=True)))
    return loss, tape.gradient(loss, [x] + weights)

  losses, times = [], []
  for i in range(warmup + repeats):
    start = time.perf_counter()
    loss, grads = step(x)
    fetched = [t.numpy() for t in [loss] + grads]
    if i >= warmup:
      times.append(time.perf_counter() - start)
    losses.append(float(fetched[0]))
  return {"seconds": min(times), "repeatable": len(set(losses)) == 1}


def measure_cell(num_experts: int, group_size: int, *, d_model: int, hidden: int,
                 capacity_factor: float, batch: int, length: int, warmup: int,
                 repeats: int) -> Dict:
  """peer_s / peer_dense_s of one cell and the routing the peer's router was given."""
  seen = []
  moe = time_fwd_bwd(moe_layer(num_experts, hidden, capacity_factor, group_size, length, seen),
                     d_model, batch, length, warmup, repeats)
  dense = time_fwd_bwd(dense_ffn(int(capacity_factor * hidden), d_model), d_model, batch,
                       length, warmup, repeats)
  routing = {(s["tokens_per_group"], s["capacity"], s["training"], s["jitter_noise"])
             for s in seen}
  if len(routing) != 1:
    raise RuntimeError(f"the peer router was called with differing settings: {routing}")
  tokens_per_group, capacity, training, jitter = routing.pop()
  return {"peer_s": moe["seconds"], "peer_dense_s": dense["seconds"],
          "peer_tokens_per_group": tokens_per_group, "peer_capacity": capacity,
          "peer_train_mode": training, "peer_jitter_noise": jitter,
          "peer_repeatable": moe["repeatable"] and dense["repeatable"]}
