"""Generation (evaluation/generate.py) against a reference built from one-pass scoring: greedy
decoding equals repeatedly appending the argmax of the whole-sequence logits at the next
position; beam search (alpha 0) finds a continuation at least as likely as greedy's, and its
sequences are scored by the same reference. The checkpoint is a freshly initialised Primer
tiny (its dconv state is the newest decoding code) saved here, no training needed."""

import json
import subprocess
import sys

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import harness

from brainformer_tf.config import ginutil
from brainformer_tf.evaluation import generate
from brainformer_tf.evaluation import leakfree

MODEL, LENGTH = "models/primer_tiny.gin", 16
PROMPTS = [[17, 42, 99, 7], [5, 300, 12], [250, 3, 3, 3, 90, 61]]


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
  """A saved, randomly initialised model with operative_config.gin naming its Gin file."""
  model_dir = tmp_path_factory.mktemp("primer")
  _save_initialised(model_dir, MODEL)
  return model_dir


class Reference:
  """Whole-sequence next-token log-probabilities of the checkpoint's model."""

  def __init__(self, model_dir):
    prefix, _, operative = generate.checkpoint.resolve(str(model_dir))
    ginutil.parse_model_config([operative])
    vocab_size = leakfree.vocabulary().vocab_size
    self.graph = tf.Graph()
    with self.graph.as_default():
      graph, mesh, model = generate.checkpoint.one_device_lm(vocab_size)
      self.tokens = tf.placeholder(tf.int32, [1, LENGTH])
      dims = mtf.Shape([mtf.Dimension("batch", 1), mtf.Dimension("length", LENGTH)])
      targets = mtf.import_tf_tensor(mesh, self.tokens, dims)
      logits, _ = model.call_simple(
          inputs=transformer.autoregressive_inputs(targets), targets=targets,
          compute_loss=False, mode=tf.estimator.ModeKeys.EVAL, variable_dtype=generate.F32)
      lowering, saver = generate.checkpoint.lower_one_device(graph, mesh)
      self.log_p = tf.nn.log_softmax(lowering.export_to_tf_tensor(logits))
      init, copy = tf.global_variables_initializer(), lowering.copy_masters_to_slices()
    self.session = tf.Session(graph=self.graph)
    self.session.run(init)
    saver.restore(self.session, prefix)
    self.session.run(copy)

  def next_log_p(self, ids):
    """log p(next token | ids) [vocab]."""
    grid = np.zeros([1, LENGTH], np.int32)
    grid[0, :len(ids)] = ids
    return self.session.run(self.log_p, {self.tokens: grid})[0, len(ids)]

  def greedy(self, prompt, n):
    ids = list(prompt)
    for _ in range(n):
      ids.append(int(np.argmax(self.next_log_p(ids))))
    return ids[len(prompt):]

  def score(self, prompt, new):
    ids, total = list(prompt), 0.0
    for t in new:
      total += float(self.next_log_p(ids)[t])
      ids.append(t)
    return total


@pytest.fixture(scope="module")
def reference(checkpoint_dir):
  return Reference(checkpoint_dir)


@pytest.mark.slow
def test_greedy_equals_argmax_of_whole_sequence_scoring(checkpoint_dir, reference):
  gen = generate.Generator(str(checkpoint_dir), generate.Settings(max_new_tokens=5), batch=2,
                           length=LENGTH)
  got = gen.generate(PROMPTS)   # 3 prompts, batch 2: two batches, the last one padded
  gen.close()
  assert [len(g) for g in got] == [5, 5, 5]   # random weights: EOS is unlikely this early
  assert got == [reference.greedy(p, 5) for p in PROMPTS]


@pytest.mark.slow
def test_greedy_decoding_of_a_gated_gelu_model(tmp_path):
  """Dense tiny's FFN is gated GeLU: in decoding's while_loop it is built from TF ops (TF cannot
  place an XLA function in a TF1 while frame), in the reference's one pass as the XLA kernel;
  both pick the same tokens."""
  _save_initialised(tmp_path, "models/dense_tiny.gin")
  ref = Reference(tmp_path)
  gen = generate.Generator(str(tmp_path), generate.Settings(max_new_tokens=4), batch=2,
                           length=LENGTH)
  got = gen.generate(PROMPTS[:2])
  gen.close()
  assert got == [ref.greedy(p, 4) for p in PROMPTS[:2]]


@pytest.mark.slow
def test_beam_search_is_at_least_as_likely_as_greedy(checkpoint_dir, reference):
  settings = generate.Settings(max_new_tokens=2, beam_size=4, alpha=0.0)
  gen = generate.Generator(str(checkpoint_dir), settings, batch=3, length=LENGTH)
  beams = gen.generate(PROMPTS)
  gen.close()
  for prompt, beam in zip(PROMPTS, beams):
    assert len(beam) == 2
    greedy = reference.greedy(prompt, 2)
    # two steps: the beam keeps greedy's first token among its 4, so it cannot do worse
    assert reference.score(prompt, beam) >= reference.score(prompt, greedy) - 1e-5


@pytest.mark.slow
def test_sampling_follows_the_seed_and_top_k_1_is_greedy(checkpoint_dir, reference):
  def run(**kwargs):
    gen = generate.Generator(str(checkpoint_dir), generate.Settings(max_new_tokens=4, **kwargs),
                             batch=3, length=LENGTH)
    out = gen.generate(PROMPTS)
    gen.close()
    return out
  assert run(temperature=1.0, seed=3) == run(temperature=1.0, seed=3)
  assert run(temperature=1.0, top_k=1) == [reference.greedy(p, 4) for p in PROMPTS]


@pytest.mark.parametrize("settings,message", [
    (dict(max_new_tokens=0), "--max_new_tokens=0"),
    (dict(max_new_tokens=16), "--max_new_tokens=16"),
    (dict(max_new_tokens=4, temperature=-1.0), "--temperature=-1.0"),
    (dict(max_new_tokens=4, beam_size=2, temperature=0.5), "choose one")])
def test_bad_settings_are_named(tmp_path, settings, message):
  """Checked first: no checkpoint is read (there is none here)."""
  with pytest.raises(generate.errors.UsageError, match=message):
    generate.Generator(str(tmp_path), generate.Settings(**settings), length=LENGTH)


def _save_initialised(model_dir, model_file):
  # the model and the task (its vocabulary), as a training run's operative config holds them
  generate.checkpoint.save_initialised(str(model_dir), [model_file, "train/cpu.gin"],
                                       leakfree.vocabulary().vocab_size, LENGTH)


def _decode(*args, stdin=None):
  return harness.brainformer("decode", *args, input=stdin)


@pytest.mark.slow
def test_decode_command_writes_one_line_per_prompt(checkpoint_dir, reference, tmp_path, capfd):
  """Greedy through the command equals the reference's tokens, decoded; an over-long prompt
  keeps its end with a warning; sampling repeats across processes with the same seed; an
  empty input, a non-causal model and a model that does not match the checkpoint are one-line
  errors (exit 2) that write nothing (the command's main() in this process)."""
  vocabulary = leakfree.vocabulary()
  long_prompt = " ".join(["the cat sat on the mat"] * 10)
  lines = ["The history of the", "In 1990 the", long_prompt]
  (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
  out = tmp_path / "out.txt"
  proc = _decode(f"--checkpoint={checkpoint_dir}", f"--input={tmp_path}/prompts.txt",
                 f"--output={out}", "--max_new_tokens=4", f"--sequence_length={LENGTH}",
                 "--batch_size=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "warning: prompt 3 has" in proc.stderr and "kept its last 12" in proc.stderr
  written = out.read_text().split("\n")[:-1]
  assert len(written) == 3
  for line, got in zip(lines, written):
    ids = [i for i in vocabulary.encode(line) if i > 1][-(LENGTH - 4):]
    expected = vocabulary.decode(reference.greedy(ids, 4))
    assert got == expected.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
  sampled = [_decode(f"--checkpoint={checkpoint_dir}", "--max_new_tokens=4", "--temperature=1",
                     f"--sequence_length={LENGTH}", stdin="The history of the\n")
             for _ in range(2)]
  assert sampled[0].returncode == 0, sampled[0].stderr[-2000:]
  assert sampled[0].stdout == sampled[1].stdout and sampled[0].stdout.count("\n") == 1
  (tmp_path / "empty.txt").write_text("")
  code, stderr = harness.brainformer_in_process(
      ["decode", f"--checkpoint={checkpoint_dir}", f"--input={tmp_path}/empty.txt",
       f"--output={out}"], capfd)
  assert code == 2 and "no prompts (empty input)" in stderr
  assert "Traceback" not in stderr and out.read_text().count("\n") == 3
  ec_dir = tmp_path / "ec"
  ec_dir.mkdir()
  _save_initialised(ec_dir, "models/glam_ec_tiny.gin")
  code, stderr = harness.brainformer_in_process(
      ["decode", f"--checkpoint={ec_dir}", f"--input={tmp_path}/prompts.txt",
       f"--sequence_length={LENGTH}", "--max_new_tokens=4"], capfd)
  assert code == 2 and "routes with non-causal expert choice" in stderr, stderr[-2000:]
  code, stderr = harness.brainformer_in_process(
      ["decode", f"--checkpoint={checkpoint_dir}", f"--input={tmp_path}/prompts.txt",
       f"--sequence_length={LENGTH}", "--max_new_tokens=4", "--gin_param=d_ff = 96"], capfd)
  assert code == 2 and "model does not match checkpoint" in stderr, stderr[-2000:]
  assert "Traceback" not in stderr


LOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers SentencepieceOp (the exported graph tokenizes)
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](tf.constant(json.loads(sys.argv[2])))
assert not [m for m in sys.modules if m.startswith(("brainformer_tf", "mesh_tensorflow"))]
print(json.dumps([x.decode() for x in out["outputs"].numpy()]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("beam_size", [1, 3])
def test_exported_model_serves_what_decode_prints(checkpoint_dir, tmp_path, beam_size):
  """`brainformer export`, loaded with tf.saved_model.load in a fresh Python that imports
  neither this package nor mesh-tf, continues prompts exactly as `brainformer decode`."""
  settings = ["--max_new_tokens=4", f"--sequence_length={LENGTH}", f"--beam_size={beam_size}"]
  proc = harness.brainformer("export", f"--checkpoint={checkpoint_dir}",
                             f"--export_dir={tmp_path}/export", *settings, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Object was never used" not in proc.stderr
  (saved,) = list((tmp_path / "export").iterdir())
  prompts = ["The history of the", "In 1990 the", "A"]
  env = {"PATH": "/usr/bin:/bin", "BRAINFORMER_COMPAT_HOOK": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
  served = subprocess.run([sys.executable, "-c", LOAD, str(saved), json.dumps(prompts)],
                          capture_output=True, text=True, timeout=600, env=env)
  assert served.returncode == 0, served.stderr[-3000:]
  decoded = _decode(f"--checkpoint={checkpoint_dir}", *settings, stdin="\n".join(prompts) + "\n")
  assert decoded.returncode == 0, decoded.stderr[-2000:]
  assert json.loads(served.stdout) == decoded.stdout.split("\n")[:-1]
