"""Text from a trained zoo LM: greedy decoding, sampling and beam search (mesh-tf's infer mode).

The checkpoint's model (its operative_config.gin) runs on one CPU device in mesh-tf's decoding
modes: a "first_part" pass, then one "incremental" step per token, each layer keeping its
decoding state (key/value caches; Primer's pre-conv projections; tests/test_decoding.py shows
token-at-a-time equals one pass over the whole sequence for every causal zoo family).

  greedy / sampling   Unitransformer.sample_autoregressive continues each prompt: temperature
                      0 is greedy (argmax), > 0 samples from softmax(logits / temperature),
                      top_k > 0 keeps the k largest logits first (mesh-tf's
                      sampling_keep_top_k; mesh-tf has no top-p).
  beam search         mesh-tf's mtf.beam_search.beam_search with its length penalty
                      ((5 + n) / 6) ** alpha. mesh-tf's Unitransformer.beam_search cannot
                      continue a prompt (it starts every sequence at position 0), so the
                      prompt is forced: at steps before a row's prompt length its logits are
                      0 for the prompt token and -1e9 elsewhere (log-probability 0), then the
                      model's own; after max_new_tokens new tokens EOS is forced, so every
                      row's beams are ranked on exactly its own continuation. n in the
                      penalty counts the prompt too, the same for every beam of a row.

Sampling is repeatable with the same seed in one process. Across processes also set
PYTHONHASHSEED: mesh-tf's placement mesh derives each random op's seed from Python's str hash,
which is salted per process unless PYTHONHASHSEED is set (`brainformer decode` sets it).

Shapes: prompts [batch, length] int32, left-aligned, 0 = padding; a prompt longer than
`length - max_new_tokens` keeps its last tokens (the caller is told). Output: the new tokens
of each row up to its first EOS (excluded) or max_new_tokens.
"""

import dataclasses
import random
from typing import List, Sequence

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import tensorflow.compat.v1 as tf

from brainformer_tf.config import errors
from brainformer_tf.config import ginutil
from brainformer_tf.evaluation import checkpoint
from brainformer_tf.evaluation import driver
from brainformer_tf.evaluation import leakfree

EOS = 1
FORCED_OFF = -1e9
F32 = mtf.VariableDType(tf.float32, tf.float32, tf.float32)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to decode. beam_size > 1 selects beam search (then temperature/top_k are unused)."""
  max_new_tokens: int = 32
  temperature: float = 0.0
  top_k: int = 0
  beam_size: int = 1
  alpha: float = 0.6
  seed: int = 1234

  @classmethod
  def from_flags(cls, args):
    """The settings among the parsed command-line flags `args` (the others keep defaults)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if hasattr(args, f.name)})

  def check(self, length: int):
    """UsageError naming the first bad setting."""
    if self.max_new_tokens < 1 or self.max_new_tokens >= length:
      raise errors.UsageError(f"--max_new_tokens={self.max_new_tokens}: must be in "
                              f"[1, {length - 1}] (--sequence_length={length} holds the prompt "
                              "and the new tokens)")
    if self.temperature < 0:
      raise errors.UsageError(f"--temperature={self.temperature}: must be >= 0")
    if self.top_k < 0:
      raise errors.UsageError(f"--top_k={self.top_k}: must be >= 0 (0 = no cut)")
    if self.beam_size < 1:
      raise errors.UsageError(f"--beam_size={self.beam_size}: must be >= 1")
    if self.beam_size > 1 and (self.temperature or self.top_k):
      raise errors.UsageError("--beam_size > 1 searches; --temperature and --top_k sample: "
                              "choose one")


def sample(model, prompts: mtf.Tensor, settings: Settings, variable_dtype=F32) -> mtf.Tensor:
  """Greedy or sampled continuations [batch, length] (prompt removed, zeros after)."""
  return model.sample_autoregressive(
      prompts, stop_at_token=EOS, max_steps=settings.max_new_tokens,
      temperature=settings.temperature, variable_dtype=variable_dtype,
      sampling_keep_top_k=settings.top_k or -1, remove_partial_sequences=True)


def beam_search(model, prompts: mtf.Tensor, prompt_length: mtf.Tensor, decode_length: mtf.Tensor,
                settings: Settings, variable_dtype=F32) -> mtf.Tensor:
  """The best beam [batch, length] of each row, prompt included (forced, see module doc)."""
  batch_dim, length_dim = prompts.shape.dims
  beam_dim = mtf.Dimension("beam", settings.beam_size)
  mesh = prompts.mesh
  zeros = mtf.zeros(mesh, [batch_dim, beam_dim, length_dim], tf.int32)
  length_range = mtf.range(mesh, length_dim, tf.int32)
  first = transformer.Context(
      model=model, mesh=mesh, batch_dims=[batch_dim, beam_dim], length_dim=length_dim,
      variable_dtype=variable_dtype, mode="first_part", position=length_range,
      position_is_default=True,
      new_states=[], initial_position=mtf.zeros(mesh, [batch_dim, beam_dim], tf.int32),
      sequence_id=None, encoder_output=None, encoder_sequence_id=None, constant_states=[],
      shared_params=None, encoder_layer_outputs=None, write_priority=length_range,
      read_priority=length_range, inputs=zeros, encoder_inputs=None)
  with tf.variable_scope(model.name):
    model._call_internal(first, transformer.autoregressive_inputs(zeros))  # pylint: disable=protected-access
  states = [mtf.zeros_like(t) for t in first.new_states]   # nothing decoded yet

  def logits_fn(step, ids, step_states):
    previous = mtf.gather(ids, step - 1, length_dim)
    context = transformer.Context(
        model=model, mesh=mesh, batch_dims=[batch_dim, beam_dim], length_dim=length_dim,
        variable_dtype=variable_dtype, mode="incremental", position=step, states=step_states,
        new_states=[], sequence_id=None, encoder_output=None, encoder_sequence_id=None,
        constant_states=first.constant_states, shared_params=None, encoder_layer_outputs=None,
        write_priority=length_range, read_priority=step, inputs=previous, encoder_inputs=None)
    with tf.variable_scope(model.name, reuse=True):
      logits = mtf.to_float(model._call_internal(context, previous))  # pylint: disable=protected-access
    def force(token):
      return mtf.one_hot(token, model.output_vocab_dim, on_value=0.0, off_value=FORCED_OFF,
                         dtype=tf.float32)
    in_prompt = mtf.to_float(mtf.less(step, prompt_length))           # [batch]
    at_end = mtf.to_float(mtf.greater_equal(step, prompt_length + settings.max_new_tokens))
    free = (1.0 - in_prompt) * (1.0 - at_end)
    return (logits * free + force(mtf.gather(prompts, step, length_dim)) * in_prompt +
            force(mtf.constant(mesh, EOS, dtype=tf.int32)) * at_end), context.new_states

  beams, _ = mtf.beam_search.beam_search(
      logits_fn, zeros, settings.alpha, states=states, decode_length=decode_length,
      use_tpu=True, dtype=tf.float32, mesh_shape=model.mesh_shape, layout=model.layout)
  return mtf.gather(beams, mtf.constant(mesh, 0, dtype=tf.int32), beam_dim)


def continuations(model, prompts: mtf.Tensor, settings: Settings, decode_length: mtf.Tensor,
                  variable_dtype=F32) -> mtf.Tensor:
  """The new tokens [batch, length] after each prompt of `prompts` [batch, length] (left-aligned,
  0 = padding), at most settings.max_new_tokens of them, zeros after: greedy / sampled, or the
  best beam with its prompt shifted out. decode_length (scalar): the positions beam search
  decodes (prompt + new tokens + the forced EOS), at most length."""
  if settings.beam_size == 1:
    return sample(model, prompts, settings, variable_dtype)
  length_dim = prompts.shape.dims[-1]
  lengths = mtf.reduce_sum(mtf.to_int32(mtf.not_equal(prompts, 0)), reduced_dim=length_dim)
  beams = beam_search(model, prompts, lengths, decode_length, settings, variable_dtype)
  new = mtf.dynamic_shift(beams, -lengths, length_dim, wrap=False)
  return new * mtf.to_int32(mtf.less(mtf.range(prompts.mesh, length_dim, tf.int32),
                                     settings.max_new_tokens))


@gin.configurable(module="generate")
def predict_fn(model, features, variable_dtype, max_new_tokens=32, temperature=0.0, top_k=0,
               beam_size=1, alpha=0.6):
  """mesh-tf's `utils.run.predict_fn` for export mode: the exported model continues each
  "inputs" prompt as `brainformer decode` does (mesh-tf's default appends EOS to the prompt,
  so an LM would start a new document). features["inputs"]: [batch, inputs length], each
  [prompt, EOS, 0...]; returns the new ids [batch, inputs length + max_new_tokens]."""
  settings = Settings(max_new_tokens, temperature, top_k, beam_size, alpha)
  prompts = features["inputs"]
  prompts *= mtf.to_int32(mtf.not_equal(prompts, EOS))
  prompts = mtf.pad(prompts, [0, max_new_tokens], prompts.shape.dims[-1].name)
  decode_length = mtf.constant(prompts.mesh, prompts.shape.dims[-1].size, dtype=tf.int32)
  return continuations(model, prompts, settings, decode_length, variable_dtype)


class Generator:
  """A checkpoint's LM lowered once for `settings`: `generate(prompt ids) -> new ids`."""

  def __init__(self, model_dir_or_prefix: str, settings: Settings, batch: int = 8,
               length: int = 128, gin_files: Sequence[str] = (), gin_params: Sequence[str] = ()):
    settings.check(length)
    self.settings, self.batch, self.length = settings, batch, length
    self.prefix, self.step = checkpoint.load_config(model_dir_or_prefix, gin_files, gin_params)
    max_length = ginutil.query("Unitransformer.max_length")
    if isinstance(max_length, int) and length > max_length:
      raise errors.UsageError(f"--sequence_length={length}: the model holds at most "
                              f"Unitransformer.max_length = {max_length} positions")
    model_type = ginutil.query("utils.run.model_type", "lm")
    if model_type != "lm":
      raise errors.UsageError(f"utils.run.model_type={model_type!r}: decode continues prompts "
                              "of a decoder-only language model ('lm')")
    self.vocabulary = leakfree.vocabulary()
    checkpoint.check_compatible(self.prefix, "lm", self.vocabulary.vocab_size,
                                allow_missing=checkpoint.LEARNED_IN_FINETUNE)
    driver.check_causal(["decode"], "lm", self.vocabulary.vocab_size)
    self._build()

  def _build(self):
    vocab_size = self.vocabulary.vocab_size
    self._graph = tf.Graph()
    with self._graph.as_default():
      tf.random.set_random_seed(self.settings.seed)
      random.seed(self.settings.seed)   # mesh-tf's placement mesh draws its op seeds from it
      graph, mesh, model = checkpoint.one_device_lm(vocab_size, "decode_mesh")
      dims = mtf.Shape([mtf.Dimension("batch", self.batch), mtf.Dimension("length", self.length)])
      self._prompts = tf.placeholder(tf.int32, [self.batch, self.length])
      self._decode_length = tf.placeholder(tf.int32, [])   # beam search only
      out = continuations(model, mtf.import_tf_tensor(mesh, self._prompts, dims), self.settings,
                          mtf.import_tf_tensor(mesh, self._decode_length, mtf.Shape([])))
      lowering, saver = checkpoint.lower_one_device(graph, mesh)
      self._out = lowering.export_to_tf_tensor(out)
      init = tf.global_variables_initializer()
      copy = lowering.copy_masters_to_slices()
    self._session = tf.Session(graph=self._graph)
    self._session.run(init)   # mesh-tf's slice variables; the masters come from the checkpoint
    saver.restore(self._session, self.prefix)
    self._session.run(copy)

  def fit(self, ids: Sequence[int]) -> List[int]:
    """The prompt ids the graph takes: EOS/padding dropped, the last length - max_new kept."""
    ids = [i for i in ids if i > EOS]
    room = self.length - self.settings.max_new_tokens
    return ids[-room:] if room else []

  def generate(self, prompts: Sequence[Sequence[int]]) -> List[List[int]]:
    """New ids of each prompt (already `fit`), batched; rows beyond the batch are padded."""
    out = []
    for start in range(0, len(prompts), self.batch):
      chunk = prompts[start:start + self.batch]
      grid = np.zeros([self.batch, self.length], np.int32)
      for row, ids in enumerate(chunk):
        grid[row, :len(ids)] = ids
      decode_length = min(self.length, max(len(ids) for ids in chunk) +
                          self.settings.max_new_tokens + 1)   # + the forced EOS
      got = self._session.run(self._out, {self._prompts: grid,
                                          self._decode_length: decode_length})
      for new in got[:len(chunk)].tolist():
        new = new[:self.settings.max_new_tokens]
        out.append(new[:new.index(EOS)] if EOS in new else [t for t in new if t])
    return out

  def close(self):
    self._session.close()
