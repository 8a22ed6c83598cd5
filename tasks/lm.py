"""Decoder-only language-modelling tasks.

  default_corpus_lm   the embedded default corpus (Python reference topics; no download)
  local_text_lm       any local text files, given in Gin or the environment:
                        local_text_files.train = ["a.txt", "dir/*.txt"]
                        local_text_files.validation = ["valid.txt"]
                      or BRAINFORMER_TEXT_TRAIN / BRAINFORMER_TEXT_VALIDATION (comma-separated)

Each example is one paragraph (see brainformer_tf.data.text), tokenized, split into pieces that
fit the target length, with EOS appended; mesh-tf then packs several into one sequence.
"""

import functools
import os
from typing import Sequence

import gin
import seqio
from t5.data import preprocessors as t5_preprocessors
import tensorflow as tf

from brainformer_tf.data import default_corpus
from brainformer_tf.data import text
from brainformer_tf.data import vocab

TEXT_ENV = {"train": "BRAINFORMER_TEXT_TRAIN", "validation": "BRAINFORMER_TEXT_VALIDATION"}


def lm_output_features(vocabulary=vocab.DEFAULT_VOCABULARY):
  return {"targets": seqio.Feature(vocabulary=vocabulary, add_eos=True)}


LM_PREPROCESSORS = (
    functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
    seqio.preprocessors.tokenize,
    t5_preprocessors.split_tokens_to_targets_length,
    seqio.preprocessors.append_eos_after_trim,
)


def paragraph_dataset(paragraphs: Sequence[str], split: str, shuffle: bool, seed=None):
  """A tf.data.Dataset of {"text": paragraph}."""
  ds = tf.data.Dataset.from_tensor_slices({"text": list(paragraphs)})
  if shuffle and split == "train":
    ds = ds.shuffle(len(paragraphs), seed=seed, reshuffle_each_iteration=True)
  return ds


def register_lm_task(name: str, source: seqio.DataSource, vocabulary=vocab.DEFAULT_VOCABULARY):
  """Registers a decoder-only LM task over a source of {"text": ...} examples."""
  return seqio.TaskRegistry.add(
      name, source=source, preprocessors=list(LM_PREPROCESSORS),
      output_features=lm_output_features(vocabulary), metric_fns=[])


def _default_corpus_dataset(split, shuffle_files=False, seed=None):
  return paragraph_dataset(default_corpus.split_paragraphs(split), split, shuffle_files, seed)


@gin.configurable
def local_text_files(train: Sequence[str] = (), validation: Sequence[str] = ()):
  """File names or glob patterns per split; the environment variables fill unset splits."""
  files = {"train": list(train), "validation": list(validation)}
  for split, env in TEXT_ENV.items():
    if not files[split] and os.environ.get(env):
      files[split] = [p for p in os.environ[env].split(",") if p]
  return files


def expand_patterns(patterns: Sequence[str], what: str):
  """Glob-expands patterns; a pattern that matches nothing is an error naming it."""
  found = []
  for pattern in patterns:
    matches = sorted(tf.io.gfile.glob(pattern))
    if not matches:
      raise text.CorpusError(f"{what}: no file matches {pattern!r}")
    found.extend(matches)
  return found


def local_text_paragraphs(split: str):
  patterns = local_text_files()[split]
  if not patterns:
    raise text.CorpusError(
        f"local_text_lm has no {split} files: set local_text_files.{split} in Gin or "
        f"{TEXT_ENV[split]} in the environment")
  return text.file_paragraphs(expand_patterns(patterns, f"local_text_files.{split}"))


def _local_text_dataset(split, shuffle_files=False, seed=None):
  return paragraph_dataset(local_text_paragraphs(split), split, shuffle_files, seed)


register_lm_task(
    "default_corpus_lm",
    seqio.FunctionDataSource(_default_corpus_dataset, splits=default_corpus.SPLITS))
register_lm_task(
    "local_text_lm",
    seqio.FunctionDataSource(_local_text_dataset, splits=("train", "validation")))
