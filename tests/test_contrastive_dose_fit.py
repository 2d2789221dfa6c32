"""The contrastive dose analysis: the car-only loss floor against a direct sum, the convergence
rule, pooling runs saved twice, and the count-against-rate pairs (with hand-computed statistics)."""
import math

import pytest

from experiments import contrastive_dose_fit as dose_fit


def _row(steps, p, seed, light, loss=3.49, policy="mention"):
  return {"loss": "clip", "embed_dim": 8, "policy": policy, "lamp_size": 2,
          "duplicates": "negative", "steps": steps, "mention_prob": p, "seed": seed,
          "final_loss": loss, "exposures": int(p * steps * 128),
          "probe": {"embedding": {"light": light, "car_color": 1.0}}}


def test_car_floor_is_the_expected_log_of_same_colour_partners():
  # Direct: sum over k of C(B-1, k) (1/4)^k (3/4)^(B-1-k) log(1 + k).
  for b in (2, 8, 128):
    direct = sum(math.comb(b - 1, k) * 0.25 ** k * 0.75 ** (b - 1 - k) * math.log1p(k)
                 for k in range(b))
    assert dose_fit.car_floor(b) == pytest.approx(direct, rel=1e-12)
  assert dose_fit.car_floor(128) == pytest.approx(3.4775, abs=1e-4)


def test_convergence_rule_looks_at_the_loss_only():
  floor = dose_fit.car_floor(128)
  assert dose_fit.converged(_row(400, 0.0, 0, 0.5, loss=floor + 0.049), 128)
  assert dose_fit.converged(_row(400, 1.0, 0, 0.99, loss=2.8), 128)       # learned the light too
  assert not dose_fit.converged(_row(100, 0.0, 0, 0.5, loss=floor + 0.051), 128)
  assert not dose_fit.converged(_row(400, 0.0, 0, 0.5, policy="swap"), 128)
  assert not dose_fit.converged({**_row(400, 0.0, 0, 0.5), "final_loss": None}, 128)


def test_pool_counts_a_run_saved_twice_once():
  a, b = _row(400, 1.0, 0, 0.9), _row(400, 1.0, 1, 0.8)
  assert dose_fit.pool([[a, b], [dict(a), _row(800, 0.5, 0, 0.95)]]) == [
      a, b, _row(800, 0.5, 0, 0.95)]


def test_matched_pairs_same_counts_by_seed_with_holm():
  rows = ([_row(400, 0.5, s, v) for s, v in enumerate([0.6, 0.7, 0.8])]
          + [_row(800, 0.25, s, v) for s, v in enumerate([0.7, 0.9, 0.9])]
          + [_row(800, 0.5, s, 0.9) for s in range(3)]                  # no 1.0 x 400 partner
          + [_row(100, 1.0, s, 0.9, loss=4.2) for s in range(3)])       # not converged
  fam = dose_fit.matched(rows, 128)
  assert list(fam) == ["0.25 x 800 - 0.5 x 400 (25,600 light captions)"]
  e = fam["0.25 x 800 - 0.5 x 400 (25,600 light captions)"]
  # Differences 0.1, 0.2, 0.1: mean 0.4/3, sd sqrt(1/300), t(0.975, 2) = 4.302653.
  assert e["n"] == 3 and e["mean"] == pytest.approx(0.4 / 3)
  assert e["ci"] == pytest.approx(4.302653 * math.sqrt(1 / 300) / math.sqrt(3), rel=1e-5)
  assert e["p_holm"] == e["p"]                          # a family of one
  assert dose_fit.matched(rows[:3], 128) == {}          # the control: nothing to pair


def test_the_fit_uses_converged_runs_and_every_setting_survives_resampling():
  rows = [_row(400, p, s, 0.5 + 0.45 * p + 0.01 * s) for p in (0.0, 0.25, 0.5, 0.75, 1.0)
          for s in range(3)] + [_row(100, 1.0, s, 0.55, loss=4.3) for s in range(3)]
  got = dose_fit.fit(rows, 128, n_boot=10)
  assert (got["points"], got["runs"], got["settings"]) == (15, 18, 5)
  assert got["n_groups"] == 5 and got["n_failed"] < got["n_boot"]
  assert "error" in dose_fit.fit(rows[-3:], 128, n_boot=10)       # too few converged points: reported
