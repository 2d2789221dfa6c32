"""Dose-response of a probe: accuracy against how many times training showed the thing.

Model (``curve``): ``acc(x) = floor + (top - floor) * sigmoid(slope * (log10(1 + x) - mid))`` with
x the dose (e.g. light-mentioning captions seen). ``fit`` is a least-squares fit of ``(mid, slope,
top, floor)`` (scipy's ``curve_fit``; ``top`` and ``floor`` bounded to [chance, 1]; the floor is a
free parameter, so a tower that holds some of the thing before any dose is not forced to chance).
``dose_at(params, level)`` inverts it (0 when the floor is already at ``level``, inf when the
ceiling stays below it). ``bootstrap`` refits on resamples drawn *within each group* (e.g. the
seeds of one training setting), so every resample keeps every setting, and gives percentile
intervals of the parameters and of the dose that reaches ``level``. numpy in, floats out; scipy is
imported lazily.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

PARAMS = ("mid", "slope", "top", "floor")


def curve(x, mid: float, slope: float, top: float, floor: float):
  z = slope * (np.log10(1.0 + np.asarray(x, np.float64)) - mid)
  return floor + (top - floor) / (1.0 + np.exp(-z))


def _check(x, y, chance: float):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1 or len(x) < len(PARAMS) + 1:
    raise ValueError(f"doses {x.shape} and accuracies {y.shape} must be two 1-D arrays of the "
                     f"same length >= {len(PARAMS) + 1}")
  if (x < 0).any() or not np.isfinite(y).all():
    raise ValueError("doses must be >= 0 and accuracies finite")
  if not 0.0 <= chance < 1.0:
    raise ValueError(f"chance={chance!r} is invalid; allowed: in [0, 1)")
  return x, y


def fit(doses: Sequence[float], accuracies: Sequence[float], chance: float) -> dict:
  """``{"mid", "slope", "top", "floor"}`` of the least-squares fit of ``curve``."""
  from scipy.optimize import curve_fit  # pylint: disable=import-outside-toplevel
  x, y = _check(doses, accuracies, chance)
  logs = np.log10(1.0 + x)
  low_dose = y[logs <= np.min(logs) + 1e-12]
  start = (float(np.median(logs)), 2.0, float(y.max()), float(np.mean(low_dose)))
  lower = (logs.min() - 3.0, 0.01, chance, chance)
  upper = (logs.max() + 3.0, 50.0, 1.0, 1.0)
  params, _ = curve_fit(lambda xx, m, s, t, f: curve(xx, m, s, t, f), x, y,
                        p0=np.clip(start, lower, upper), bounds=(lower, upper), maxfev=4000)
  return dict(zip(PARAMS, map(float, params)))


def dose_at(params: dict, level: float) -> float:
  """The dose at which the fitted curve reaches ``level``: 0 if its floor is already there, inf if
  its ceiling stays below it."""
  top, floor = params["top"], params["floor"]
  if floor >= level:
    return 0.0
  if top <= level:
    return math.inf
  frac = (level - floor) / (top - floor)
  return max(10.0 ** (params["mid"] + math.log(frac / (1.0 - frac)) / params["slope"]) - 1.0, 0.0)


def resample(groups: Sequence, rng: np.random.Generator) -> np.ndarray:
  """Indices of one stratified bootstrap resample: within each group (in order of first
  appearance), as many draws with replacement as the group has members, so no resample loses a
  group."""
  members: dict = {}
  for i, g in enumerate(groups):
    members.setdefault(g, []).append(i)
  return np.concatenate([rng.choice(m, len(m), replace=True) for m in members.values()]
                        ) if members else np.zeros(0, np.int64)


def bootstrap(doses, accuracies, chance: float, level: float = 0.9,
              groups: Optional[Sequence] = None, n_boot: int = 300, seed: int = 0) -> dict:
  """The fit on all points plus 95% percentile intervals over ``n_boot`` resamples (within
  ``groups``; one group when None): ``{"fit", "dose_at_level", "dose_at_level_ci95": (lo, hi),
  "<param>_ci95": (lo, hi), "n_boot", "n_failed"}``. A resample whose fit fails is skipped
  (``n_failed``)."""
  x, y = _check(doses, accuracies, chance)
  groups = [0] * len(x) if groups is None else list(groups)
  if len(groups) != len(x):
    raise ValueError(f"groups has {len(groups)} labels for {len(x)} points; allowed: one each")
  best = fit(x, y, chance)
  rng = np.random.default_rng(seed)
  draws, failed = [], 0
  for _ in range(n_boot):
    idx = resample(groups, rng)
    try:
      p = fit(x[idx], y[idx], chance)
    except (RuntimeError, ValueError):
      failed += 1
      continue
    draws.append([p[k] for k in PARAMS] + [dose_at(p, level)])
  d = np.array(draws) if draws else np.full((1, len(PARAMS) + 1), np.nan)
  # "nearest": a resample whose ceiling stays below ``level`` has dose inf, a valid upper end.
  interval = lambda col: tuple(float(v) for v in np.percentile(d[:, col], [2.5, 97.5],
                                                                method="nearest"))
  return {"fit": best, "level": level, "dose_at_level": dose_at(best, level),
          "dose_at_level_ci95": interval(len(PARAMS)),
          **{f"{k}_ci95": interval(i) for i, k in enumerate(PARAMS)},
          "n_boot": n_boot, "n_failed": failed, "n_groups": len(set(groups))}
