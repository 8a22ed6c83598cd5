"""Analyses of Gin-configured models, none of which trains anything.

  symbolic    the model's training graph built shape-only (what the others read)
  accounting  total / activated parameters and training FLOPs per token (`brainformer params`)
  memory      per-device bytes on a mesh and layout (`brainformer params --mesh`)
  block_fit   block layouts that fit the paper's parameter counts (docs/zoo.md)
"""
