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


# ---------------------------------------------------------------- C4 and Gin-weighted mixtures

C4_TFDS_NAME = "c4/en:3.1.0"
register_lm_task("c4_lm_tfds", seqio.TfdsDataSource(tfds_name=C4_TFDS_NAME))


@gin.configurable
def weighted_lm_mixture(weights=None, files=None, validation_files=None):
  """A GLaM-style weighted mixture, declared in Gin, registered as "weighted_lm_mixture".

    weighted_lm_mixture.weights = {"books": 3.0, "web": 1.0, "c4_lm_tfds": 0.5}
    weighted_lm_mixture.files = {"books": ["/d/books/*.txt"], "web": ["/d/web/*.txt"]}
    weighted_lm_mixture.validation_files = {"books": ["/d/books_valid.txt"]}

  A name in `files` becomes the LM task "weighted_lm_mixture.<name>" over those files; any
  other name must be a registered task. Returns [(task name, weight), ...].
  """
  if not weights:
    raise text.CorpusError(
        "weighted_lm_mixture has no sources: set weighted_lm_mixture.weights in Gin")
  files, validation_files = dict(files or {}), dict(validation_files or {})
  unknown = set(files) - set(weights)
  if unknown:
    raise text.CorpusError(f"weighted_lm_mixture.files names {sorted(unknown)} without a weight")
  out = []
  for name, weight in weights.items():
    if name in files:
      task = register_text_files_task(f"weighted_lm_mixture.{name}", files[name],
                                      validation_files.get(name, ()))
    else:
      task = name
      seqio.get_mixture_or_task(task)  # a clear error for an unknown name
    out.append((task, float(weight)))
  return out


def register_text_files_task(name, train_patterns, validation_patterns=()):
  """Registers (or re-registers) an LM task over the given text files; returns its name."""
  patterns = {"train": list(train_patterns), "validation": list(validation_patterns)}

  def dataset(split, shuffle_files=False, seed=None):
    if not patterns[split]:
      raise text.CorpusError(f"{name} has no {split} files")
    found = expand_patterns(patterns[split], f"{name} {split}")
    return paragraph_dataset(text.file_paragraphs(found), split, shuffle_files, seed)
  seqio.TaskRegistry.remove(name)
  splits = tuple(s for s in ("train", "validation") if patterns[s])
  register_lm_task(name, seqio.FunctionDataSource(dataset, splits=splits))
  return name


class GinWeightedMixture(seqio.Mixture):
  """A seqio.Mixture whose tasks and rates are read from Gin when first used.

  Registration happens on `import tasks`, before Gin files are parsed; the sources are
  resolved from `weighted_lm_mixture` at the first access of the mixture's state.
  """

  def __init__(self, name):  # pylint: disable=super-init-not-called
    self._lazy_name = name

  def __getattr__(self, attr):
    if attr.startswith("_") and not attr.startswith("__") and "_lazy_name" in self.__dict__ \
        and "_task_to_rate" not in self.__dict__:
      seqio.Mixture.__init__(self, self._lazy_name, weighted_lm_mixture())
      return getattr(self, attr)
    raise AttributeError(attr)


seqio.MixtureRegistry.add_provider("weighted_lm_mixture", GinWeightedMixture("weighted_lm_mixture"))
