"""brainformer_tf: Brainformer and GLaM mixture-of-experts language models on Mesh-TensorFlow.

The package is laid out by concern, imports running one way (top to bottom):
  compat        the named mesh-tf / t5 patches for TF 2.15, installed when this package is
                imported (an import hook: nothing is imported until mesh-tf itself is)
  config/       shared services: errors, paths, Gin loading and queries, config checks, prepare
  layers/       Mesh-TF layers: FFN variants, attention variants, MoE routing and dispatch
  blocks/       block notation ("a g f ...") -> layer stacks, causality of built models
  data/         the embedded default corpus, local text/records sources, SentencePiece vocab
  training/     the training loop (progress, final validation, NaN guard, checkpoints)
  evaluation/   checkpoint evaluation: decoding, rank classification, leak-free scoring
  analysis/     parameter / FLOP accounting, memory estimates, fits against the paper
  search/       the evolutionary block search
  cli/          the `brainformer` command line tool (argument parsing only)
Importing this package does not import TensorFlow.
"""

from brainformer_tf import compat

__version__ = "0.1.0"

compat.install_import_hook()
