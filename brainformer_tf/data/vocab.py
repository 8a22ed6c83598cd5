"""A SentencePiece vocabulary trained locally on first use and cached.

T5/GLaM vocabularies live on gs://, which many machines cannot reach. By default every task of
this project uses `LocalSentencePieceVocabulary`: a `seqio.SentencePieceVocabulary` whose model
file is trained (unigram, T5 special ids pad=0, eos=1, unk=2, full character coverage plus byte
fallback so any UTF-8 text round-trips) the first time it is needed, from
the embedded default corpus or from the text files given in Gin, and cached under
`brainformer_tf.config.paths.cache_dir()`. Point `vocabulary_settings.model_file` at an existing
`.model` (e.g. the GLaM/T5 one on gs://) to use that instead; nothing is trained then.

Gin:
  vocabulary_settings.model_file = None     # an existing SentencePiece model, or None
  vocabulary_settings.vocab_size = 4096     # pieces to train
  vocabulary_settings.train_files = None    # text files to train on; None: the default corpus
"""

import hashlib
import os
import tempfile
from typing import Optional, Sequence

import gin
import sentencepiece as spm
import seqio
import tensorflow as tf

from brainformer_tf.config import paths
from brainformer_tf.data import default_corpus
from brainformer_tf.data import text

DEFAULT_VOCAB_SIZE = 4096
# Cap on the sentences fed to the trainer; plenty for a few thousand pieces.
_MAX_TRAINING_SENTENCES = 200_000


@gin.configurable
def vocabulary_settings(model_file: Optional[str] = None,
                        vocab_size: int = DEFAULT_VOCAB_SIZE,
                        train_files: Optional[Sequence[str]] = None):
  """Returns (model_file, vocab_size, train_files) as bound in Gin."""
  if vocab_size < 8:
    raise ValueError(f"vocabulary_settings.vocab_size={vocab_size}: must be at least 8")
  return model_file, vocab_size, train_files


def training_paragraphs(train_files: Optional[Sequence[str]]):
  if train_files:
    return text.file_paragraphs(train_files)
  return default_corpus.split_paragraphs("train")


def cached_model_path(vocab_size: int, train_files: Optional[Sequence[str]]) -> str:
  """The cache file for a vocabulary of this size trained on these sources.

  Keyed by the content of the given files, or by the default corpus' fingerprint (which does
  not need the corpus to be read, so a cached vocabulary is found in milliseconds).
  """
  if train_files:
    digest = hashlib.sha256()
    for paragraph in training_paragraphs(train_files):
      digest.update(paragraph.encode("utf-8"))
      digest.update(b"\n")
    key = digest.hexdigest()[:12]
  else:
    key = "default" + default_corpus.fingerprint()
  name = f"spm_unigram_bytefallback_{vocab_size}_{key}.model"
  return os.path.join(paths.cache_dir(), name)


def train_sentencepiece(output_path: str, vocab_size: int,
                        train_files: Optional[Sequence[str]] = None) -> str:
  """Trains a unigram SentencePiece model and moves it atomically to `output_path`."""
  sentences = training_paragraphs(train_files)[:_MAX_TRAINING_SENTENCES]
  out_dir = os.path.dirname(os.path.abspath(output_path))
  os.makedirs(out_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False,
        max_sentence_length=1 << 16,
        num_threads=os.cpu_count() or 1, minloglevel=2)
    os.replace(prefix + ".model", output_path)
  return output_path


def resolve_model_file() -> str:
  """The SentencePiece model file to use now, training and caching it if needed."""
  model_file, vocab_size, train_files = vocabulary_settings()
  if model_file:
    if not tf.io.gfile.exists(model_file):
      raise FileNotFoundError(
          f"vocabulary_settings.model_file={model_file!r}: no such SentencePiece model")
    return model_file
  path = cached_model_path(vocab_size, train_files)
  if not os.path.exists(path):
    train_sentencepiece(path, vocab_size, train_files)
  return path


class LocalSentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """seqio.SentencePieceVocabulary whose model file is resolved (and trained) on first use.

  The file is looked up when the vocabulary is first used, not when a task is registered, so
  Gin bindings parsed after `import tasks` still apply.
  """

  def __init__(self):
    super().__init__(sentencepiece_model_file=None, extra_ids=0)

  def _model_context(self):
    if self._sentencepiece_model_file is None:
      self._sentencepiece_model_file = resolve_model_file()
    return super()._model_context()

  def __eq__(self, other):
    if not isinstance(other, seqio.SentencePieceVocabulary):
      return False
    return self.sp_model == other.sp_model

  def __hash__(self):
    return id(type(self))


DEFAULT_VOCABULARY = LocalSentencePieceVocabulary()
