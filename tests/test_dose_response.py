"""The dose-response fit recovers a known curve, its inverse is exact, and the bootstrap interval
covers the truth; a flat response (the control) has no dose reaching the level."""
import math

import numpy as np
import pytest

from invariance import dose_response as dr

TRUE = {"mid": 2.0, "slope": 3.0, "top": 0.98}


def _points(params, noise, seed=0):
  x = np.repeat([0, 3, 10, 30, 100, 300, 1000, 3000, 10000], 3).astype(float)
  y = dr.curve(x, chance=0.5, **params) + np.random.default_rng(seed).normal(0, noise, len(x))
  return x, y


def test_fit_recovers_a_known_curve_and_inverts_it():
  x, y = _points(TRUE, 0.0)
  got = dr.fit(x, y, 0.5)
  for k, v in TRUE.items():
    assert abs(got[k] - v) < 1e-3, (k, got)
  dose = dr.dose_at(got, 0.9, 0.5)
  assert abs(dr.curve(dose, chance=0.5, **got) - 0.9) < 1e-6


def test_bootstrap_interval_covers_the_truth_and_a_flat_response_never_reaches_the_level():
  truth, covered = dr.dose_at(TRUE, 0.9, 0.5), 0
  for seed in range(4):          # a 95% interval from 27 points: most, not all, cover the truth
    out = dr.bootstrap(*_points(TRUE, 0.01, seed), 0.5, level=0.9, n_boot=40)
    lo, hi = out["dose_at_level_ci95"]
    covered += lo <= truth <= hi
    assert truth / 2 < lo < hi < 2 * truth
  assert covered >= 2
  x, _ = _points(TRUE, 0.0)
  flat = dr.bootstrap(x, 0.5 + np.random.default_rng(1).normal(0, 0.01, len(x)), 0.5, n_boot=5)
  assert flat["fit"]["top"] < 0.6 and math.isinf(flat["dose_at_level"])


def test_bad_input():
  with pytest.raises(ValueError, match="same length"):
    dr.fit([1, 2, 3], [0.5, 0.6, 0.7], 0.5)
  with pytest.raises(ValueError, match="chance"):
    dr.fit([1, 2, 3, 4], [0.5, 0.6, 0.7, 0.8], 1.5)
