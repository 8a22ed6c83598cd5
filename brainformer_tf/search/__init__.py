"""Evolutionary block search (paper Sec. 3) on PyGlove and Open Source Vizier: docs/search.md."""
