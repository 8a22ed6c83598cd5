"""Evolutionary block search (paper Sec. 3): `brainformer search`, docs/search.md.

  space      paper Table 1 and scaled CPU variants; Candidate = model dim + BlockSpec
  mutation   mutation operators; every mutant stays in the space
  evolution  aging evolution, persistent state.json, worker claims
  trial      one trial: Gin model file + `brainformer train` under a wall-clock budget
  reward     the reward function
  report     top-k Gin files (proxy, 2x/4x scaled and stacked), JSON log, plot
"""
