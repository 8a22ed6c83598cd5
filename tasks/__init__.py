"""SeqIO tasks of brainformer_tf; importing this package registers all of them.

  tasks.lm   decoder-only language modelling: the embedded default corpus and local text files
"""

from brainformer_tf import compat as _compat

_compat.apply()

# pylint: disable=g-import-not-at-top,unused-import
from tasks import lm
