"""Evolutionary block search (paper Sec. 3): `brainformer search`, docs/search.md. The space,
the mutations and the algorithms are PyGlove's (space, mutation); study runs a search on one
machine, vizier across machines on Open Source Vizier; trial trains one candidate, report
writes the outputs.
"""
