"""The reward of a trial (the paper gives only its inputs and the -1 of an early stop).

  reward = -1                                      early-stopped at the check (paper), or failed
  reward = (L_glam / L) * min(1, T_max / T) ** w   otherwise
L: the trial's final validation log-perplexity; L_glam: the GLaM baseline's, trained for the
same wall-clock; T: the trial's mean step time; T_max: the step-time constraint (GLaM's step
time times the slack); w: `time_weight` (default 1).
Why: the budget is wall-clock, so speed already buys more steps and shows up in L; the loss
ratio is 1 for a block as good as GLaM, above 1 for better, always > 0 (so an early stop's
-1 is the worst reward, as in the paper), and independent of the corpus' loss scale. The time
factor only acts when a finished trial is slower than the constraint (the paper's
"subject to step time < baseline"), as a soft penalty: w = 1 means 10% slower must be
10% better in loss to tie.

NSGA-II (--algorithm=nsga2) maximises two objectives instead, (L_glam / L, T_glam / T): 1 each
for GLaM, (-1, -1) for an early stop or failure; the search reports their Pareto front.
"""

EARLY_STOP = -1.0
EARLY_STOP_OBJECTIVES = (-1.0, -1.0)


def reward(val_loss: float, step_time: float, glam_loss: float, max_step_time: float,
           time_weight: float = 1.0) -> float:
  if not val_loss > 0 or not glam_loss > 0:
    raise ValueError(f"val_loss={val_loss!r} and glam_loss={glam_loss!r} must be positive")
  if not step_time > 0 or not max_step_time > 0:
    raise ValueError(f"step_time={step_time!r} and max_step_time={max_step_time!r} must be "
                     f"positive")
  return (glam_loss / val_loss) * min(1.0, max_step_time / step_time) ** time_weight


def objectives(val_loss: float, step_time: float, glam_loss: float, glam_step_time: float):
  """(loss ratio, speed ratio) against GLaM; both > 1 for a block better on that axis."""
  return glam_loss / val_loss, glam_step_time / step_time
