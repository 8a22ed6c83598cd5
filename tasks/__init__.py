"""SeqIO tasks of brainformer_tf; importing this package registers all of them.

  tasks.lm       decoder-only language modelling: C4 (TFDS), the embedded default corpus, local
                 text files, and a Gin-weighted mixture of sources
  tasks.glue     GLUE / SuperGLUE fine-tuning (paper Table 4), TFDS and official local files
  tasks.oneshot  one-shot generative evaluation (paper Table 5), TFDS and local files
See docs/tasks.md for every task, its sources, metric and Gin settings.
"""

import brainformer_tf  # pylint: disable=unused-import  (its import hook patches mesh-tf, t5)
import seqio as _seqio


def _registered_names():
  return set(_seqio.TaskRegistry.names()) | set(_seqio.MixtureRegistry.names())


_BEFORE = _registered_names()
# pylint: disable=g-import-not-at-top,unused-import
from tasks import lm
from tasks import glue
from tasks import oneshot

# The task and mixture names this package registered (not t5's or other modules').
PROJECT_NAMES = frozenset(_registered_names() - _BEFORE)
