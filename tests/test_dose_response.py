"""The dose-response fit recovers a known curve (its floor too), its inverse is exact, the
stratified bootstrap keeps every group in every resample and its interval covers the truth; a flat
response (the control) has no dose reaching the level."""
import math

import numpy as np
import pytest

from invariance import dose_response as dr

TRUE = {"mid": 2.0, "slope": 3.0, "top": 0.98, "floor": 0.6}
DOSES = [0, 3, 10, 30, 100, 300, 1000, 3000, 10000]


def _points(params, noise, seed=0):
  x = np.repeat(DOSES, 3).astype(float)
  y = dr.curve(x, **params) + np.random.default_rng(seed).normal(0, noise, len(x))
  return x, y


def test_fit_recovers_a_known_curve_with_its_floor_and_inverts_it():
  x, y = _points(TRUE, 0.0)
  got = dr.fit(x, y, 0.5)
  for k, v in TRUE.items():
    assert abs(got[k] - v) < 1e-3, (k, got)
  dose = dr.dose_at(got, 0.9)
  assert abs(dr.curve(dose, **got) - 0.9) < 1e-6
  # Hand-worked inverse: half-way between floor and top is the midpoint, 10**mid - 1.
  assert dr.dose_at(TRUE, (TRUE["top"] + TRUE["floor"]) / 2) == pytest.approx(99.0)
  assert dr.dose_at(TRUE, 0.5) == 0.0 and math.isinf(dr.dose_at(TRUE, 0.99))


def test_a_floor_above_chance_is_not_forced_down():
  """With the floor fixed at chance the same points would need another curve: the fitted floor
  stays at 0.6 (the control: points whose floor is chance fit a floor at chance)."""
  x, y = _points(TRUE, 0.0)
  assert dr.fit(x, y, 0.5)["floor"] == pytest.approx(0.6, abs=1e-3)
  x, y = _points({**TRUE, "floor": 0.5}, 0.0)
  assert dr.fit(x, y, 0.5)["floor"] == pytest.approx(0.5, abs=1e-3)


def test_stratified_resamples_keep_every_group():
  groups = ["a"] * 3 + ["b"] * 2 + ["c"]
  rng = np.random.default_rng(0)
  for _ in range(50):
    idx = dr.resample(groups, rng)
    assert sorted(groups[i] for i in idx) == sorted(groups)     # each group keeps its size
  # The control: resampling the pooled points loses group "c" in about (5/6)**6 = 33% of draws.
  lost = sum("c" not in {groups[i] for i in rng.integers(0, 6, 6)} for _ in range(300))
  assert 60 < lost < 140


def test_bootstrap_interval_covers_the_truth_and_a_flat_response_never_reaches_the_level():
  truth, covered = dr.dose_at(TRUE, 0.9), 0
  x, _ = _points(TRUE, 0.0)
  for seed in range(4):          # a 95% interval from 27 points: most, not all, cover the truth
    out = dr.bootstrap(*_points(TRUE, 0.01, seed), 0.5, level=0.9, groups=x.tolist(), n_boot=40)
    lo, hi = out["dose_at_level_ci95"]
    covered += lo <= truth <= hi
    assert truth / 2 < lo < hi < 2 * truth and out["n_groups"] == len(DOSES)
  assert covered >= 2
  flat = dr.bootstrap(x, 0.5 + np.random.default_rng(1).normal(0, 0.01, len(x)), 0.5, n_boot=5)
  assert flat["fit"]["top"] < 0.6 and math.isinf(flat["dose_at_level"])


def test_bad_input():
  with pytest.raises(ValueError, match="same length"):
    dr.fit([1, 2, 3, 4], [0.5, 0.6, 0.7, 0.8], 0.5)
  with pytest.raises(ValueError, match="chance"):
    dr.fit([1, 2, 3, 4, 5], [0.5, 0.6, 0.7, 0.8, 0.9], 1.5)
  with pytest.raises(ValueError, match="groups"):
    dr.bootstrap([1, 2, 3, 4, 5], [0.5, 0.6, 0.7, 0.8, 0.9], 0.5, groups=[0, 1])
