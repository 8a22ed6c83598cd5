"""Evolutionary block search (paper Sec. 3) on PyGlove: `brainformer search`, docs/search.md.

  space      paper Table 1 and scaled CPU variants as PyGlove hyper values; Candidate
  mutation   PyGlove mutators, random initial blocks, regularized evolution / NSGA-II
  study      one machine: state.json, the algorithm replayed on resume, worker threads
  vizier     across machines: an Open Source Vizier server hosting the algorithm, workers
  trial      one trial: Gin model file + `brainformer train` under a wall-clock budget
  reward     the reward (and NSGA-II's objectives)
  report     top-k Gin files (proxy, 2x/4x scaled and stacked), JSON log, Pareto front, plot
"""
