"""Helpers shared by the task families: output features and datasets from parsed local files."""

import os
from typing import Any, Callable, Dict, List, Sequence

import seqio
import tensorflow as tf

from brainformer_tf.data import records
from brainformer_tf.data import vocab


def text_to_text_features(vocabulary=vocab.DEFAULT_VOCABULARY):
  """inputs + targets, both with EOS: what mesh-tf `delimited_lm` (and `lm` eval) consume."""
  return {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


TEXT_TO_TEXT_PREPROCESSORS = (seqio.preprocessors.tokenize,
                              seqio.preprocessors.append_eos_after_trim)


def _spec_of(value, label=False):
  if isinstance(value, dict):
    return {k: _spec_of(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tf.TensorSpec([None], tf.string)
  if isinstance(value, bool):
    return tf.TensorSpec([], tf.bool)
  if isinstance(value, int):
    return tf.TensorSpec([], tf.int64 if label else tf.int32)
  return tf.TensorSpec([], tf.string)


def examples_dataset(examples: Sequence[Dict[str, Any]]) -> tf.data.Dataset:
  """A tf.data.Dataset over in-memory example dicts (str, int, list-of-str, nested dict).

  Ints are int32 as in TFDS, except "label" (int64, like a TFDS ClassLabel).
  """
  signature = {k: _spec_of(v, label=(k == "label")) for k, v in examples[0].items()}
  return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


# (key, file state, bad-record policy) -> parsed examples; files are parsed once per process.
_CACHE: Dict[Any, List[Dict[str, Any]]] = {}


def cached(key: Sequence[Any], paths: Sequence[str], load: Callable[[], List[Dict[str, Any]]]):
  """load(), memoised on `key`, the size/mtime of `paths` and the bad-record policy."""
  state = tuple((p, os.path.getsize(p), os.path.getmtime(p)) if os.path.exists(p) else (p,)
                for p in paths)
  full_key = (tuple(key), state, records.bad_records())
  if full_key not in _CACHE:
    _CACHE[full_key] = load()
  return _CACHE[full_key]
