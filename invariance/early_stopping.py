"""The convergence rule ``train.fit`` runs: a frozen rule, a typed state and a pure update.

    state = State()
    for step, score in validations:
      state = update(state, rule, step, score)
      if state.stopped: break

A validation score (higher is better) counts as an improvement only when it beats the best score
so far by more than ``rule.min_delta``; ``rule.patience`` evaluations in a row without one stop
the run. The best score and its step move only on an improvement, so a gain smaller than
``min_delta`` neither resets the patience count nor becomes the new best.

``to_array`` / ``from_array`` are the state's checkpoint layout (a float64 vector and a
(evaluations, 2) curve, NaN where not evaluated yet), so a resumed run stops where an
uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """The rule: evaluate ``validate(params)`` (higher is better) every ``every`` steps, keep the
  best parameters, stop once ``patience`` evaluations in a row have not improved on the best by
  more than ``min_delta``, or at the step cap (``TrainConfig.steps``)."""
  every: int
  patience: int
  min_delta: float = 0.005

  def __post_init__(self):
    if self.every < 1 or self.patience < 1 or self.min_delta < 0:
      raise ValueError(f"{self}: every and patience must be >= 1, min_delta >= 0")

  def evaluations(self, steps: int) -> int:
    """How many evaluations a run of ``steps`` steps can make (every ``every`` and the last)."""
    return steps // self.every + 1


@dataclasses.dataclass(frozen=True)
class State:
  """Where the rule stands: the best score and its step, the evaluations since it, whether the
  run stopped, and the validation curve ``((step, score), ...)``."""
  best_score: float = -math.inf
  best_step: int = 0
  since_best: int = 0
  stopped: bool = False
  curve: tuple[tuple[int, float], ...] = ()


def improves(state: State, rule: EarlyStopping, score: float) -> bool:
  """Whether ``score`` beats the best so far by more than ``min_delta``."""
  return score > state.best_score + rule.min_delta


def update(state: State, rule: EarlyStopping, step: int, score: float) -> State:
  """The state after the validation ``score`` at ``step`` (pure; the caller keeps the best
  parameters when ``improves`` holds)."""
  curve = state.curve + ((int(step), float(score)),)
  if improves(state, rule, score):
    return State(float(score), int(step), 0, False, curve)
  since = state.since_best + 1
  return dataclasses.replace(state, since_best=since, stopped=since >= rule.patience, curve=curve)


# -- checkpoint layout ----------------------------------------------------------------------------
def to_array(state: State, evaluations: int) -> tuple[np.ndarray, np.ndarray]:
  """``([best score, best step, since best, stopped], curve (evaluations, 2) NaN-padded)``."""
  if len(state.curve) > evaluations:
    raise ValueError(f"a curve of {len(state.curve)} evaluations does not fit {evaluations}")
  curve = np.full((evaluations, 2), np.nan)
  if state.curve:
    curve[:len(state.curve)] = state.curve
  vector = np.array([state.best_score, state.best_step, state.since_best, float(state.stopped)],
                    np.float64)
  return vector, curve


def from_array(vector, curve) -> State:
  """The inverse of ``to_array``."""
  best_score, best_step, since, stopped = (float(v) for v in np.asarray(vector))
  points = tuple((int(a), float(b)) for a, b in np.asarray(curve) if np.isfinite(a))
  return State(best_score, int(best_step), int(since), bool(stopped), points)
