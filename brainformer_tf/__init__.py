"""brainformer_tf: Brainformer and GLaM mixture-of-experts language models on Mesh-TensorFlow.

The package is laid out by concern:
  compat        shims that make mesh_tensorflow 0.1.21 and t5 0.9.4 import on TF 2.15
  data/         the embedded default corpus and the locally trained SentencePiece vocabulary
  layers/       Mesh-TF layers: FFN variants, attention variants, MoE routing and dispatch
  training/     training-loop hooks (progress, final validation)
  cli/          the `brainformer` command line tool
Importing this package does not import TensorFlow.
"""

__version__ = "0.1.0"
