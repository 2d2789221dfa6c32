"""Dose-response of a probe: accuracy against how many times training showed the thing.

Model (``curve``): ``acc(x) = chance + (top - chance) * sigmoid(slope * (log10(1 + x) - mid))``
with x the dose (e.g. light-mentioning captions seen). ``fit`` is a least-squares fit of
``(mid, slope, top)`` (scipy's ``curve_fit``; ``top`` bounded to [chance, 1]); ``dose_at(params,
level)`` inverts it (inf when the fitted ceiling stays below ``level``); ``bootstrap`` refits on
resampled points (with replacement) and gives percentile intervals of the parameters and of the
dose that reaches ``level``. numpy in, floats out; scipy is imported lazily.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def curve(x, mid: float, slope: float, top: float, chance: float):
  z = slope * (np.log10(1.0 + np.asarray(x, np.float64)) - mid)
  return chance + (top - chance) / (1.0 + np.exp(-z))


def _check(x, y, chance: float):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1 or len(x) < 4:
    raise ValueError(f"doses {x.shape} and accuracies {y.shape} must be two 1-D arrays of the "
                     "same length >= 4")
  if (x < 0).any() or not np.isfinite(y).all():
    raise ValueError("doses must be >= 0 and accuracies finite")
  if not 0.0 <= chance < 1.0:
    raise ValueError(f"chance={chance!r} is invalid; allowed: in [0, 1)")
  return x, y


def fit(doses: Sequence[float], accuracies: Sequence[float], chance: float) -> dict:
  """``{"mid", "slope", "top"}`` of the least-squares fit of ``curve`` (see module docstring)."""
  from scipy.optimize import curve_fit  # pylint: disable=import-outside-toplevel
  x, y = _check(doses, accuracies, chance)
  logs = np.log10(1.0 + x)
  start = (float(np.median(logs)), 2.0, float(max(y.max(), chance + 1e-3)))
  lower, upper = (logs.min() - 3.0, 0.01, chance), (logs.max() + 3.0, 50.0, 1.0)
  params, _ = curve_fit(lambda xx, m, s, t: curve(xx, m, s, t, chance), x, y,
                        p0=np.clip(start, lower, upper), bounds=(lower, upper), maxfev=4000)
  return dict(zip(("mid", "slope", "top"), map(float, params)))


def dose_at(params: dict, level: float, chance: float) -> float:
  """The dose at which the fitted curve reaches ``level`` (inf if its ceiling is below it)."""
  frac = (level - chance) / (params["top"] - chance) if params["top"] > chance else 2.0
  if not 0.0 < frac < 1.0:
    return 0.0 if frac <= 0.0 else math.inf
  return 10.0 ** (params["mid"] + math.log(frac / (1.0 - frac)) / params["slope"]) - 1.0


def bootstrap(doses, accuracies, chance: float, level: float = 0.9, n_boot: int = 300,
              seed: int = 0) -> dict:
  """The fit on all points plus 95% percentile intervals over ``n_boot`` resamples:
  ``{"fit", "dose_at_level", "dose_at_level_ci95": (lo, hi), "<param>_ci95": (lo, hi)}``.
  A resample whose fit fails is skipped (``n_failed``)."""
  x, y = _check(doses, accuracies, chance)
  best = fit(x, y, chance)
  rng = np.random.default_rng(seed)
  draws, failed = [], 0
  for _ in range(n_boot):
    idx = rng.integers(0, len(x), len(x))
    try:
      p = fit(x[idx], y[idx], chance)
    except (RuntimeError, ValueError):
      failed += 1
      continue
    draws.append((p["mid"], p["slope"], p["top"], dose_at(p, level, chance)))
  d = np.array(draws) if draws else np.full((1, 4), np.nan)
  # "nearest": a resample whose ceiling stays below ``level`` has dose inf, a valid upper end.
  interval = lambda col: tuple(float(v) for v in np.percentile(d[:, col], [2.5, 97.5],
                                                                method="nearest"))
  return {"fit": best, "level": level, "dose_at_level": dose_at(best, level, chance),
          "dose_at_level_ci95": interval(3), "mid_ci95": interval(0), "slope_ci95": interval(1),
          "top_ci95": interval(2), "n_boot": n_boot, "n_failed": failed}
