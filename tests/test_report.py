"""The shared report statistics: paired t, Holm-Bonferroni, power, against hand-computed values."""
import math

import pytest

from experiments import report


def test_paired_t_matches_hand_computed_values():
  # diffs 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.29099, se 0.645497, t = 3.87298 on 3 dof;
  # t_0.975(3) = 3.182446 -> half-width 2.054260; two-sided p = 0.030466 (t tables).
  got = report.paired_t([1.0, 2.0, 3.0, 4.0])
  assert got["n"] == 4 and got["mean"] == 2.5
  assert got["sd"] == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
  assert got["ci"] == pytest.approx(3.182446 * 0.645497, rel=1e-5)
  assert got["p"] == pytest.approx(0.030466, abs=2e-6)
  # two seeds: diffs -0.1, 0.3: mean 0.1, sd 0.282843, se 0.2, t = 0.5 on 1 dof
  # (p = 1 - 2 atan(0.5) / pi = 0.704833), t_0.975(1) = 12.706205 -> half-width 2.541241.
  two = report.paired_t([-0.1, 0.3])
  assert two["mean"] == pytest.approx(0.1) and two["ci"] == pytest.approx(2.541241, rel=1e-6)
  assert two["p"] == pytest.approx(1 - 2 * math.atan(0.5) / math.pi, rel=1e-9)
  assert report.paired_t([0.2])["p"] != report.paired_t([0.2])["p"]          # nan for one seed
  assert report.paired_t([0.1, 0.1])["p"] == 0.0 and report.paired_t([0.0, 0.0])["p"] == 1.0
  with pytest.raises(ValueError, match="diffs"):
    report.paired_t([])


def test_holm_matches_hand_computed_values_and_differs_from_bonferroni():
  # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone 0.06.
  assert report.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert report.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])                  # capped at 1
  assert report.holm([0.01]) == [0.01]
  # control: plain Bonferroni (x m for all) would give 0.04 for the 0.01 and reject fewer
  assert report.holm([0.01, 0.02])[1] == pytest.approx(0.02) != 2 * 0.02
  with pytest.raises(ValueError, match="p_values"):
    report.holm([0.1, 1.5])


def test_holm_family_marks_survivors_and_widens_intervals():
  fam = report.holm_family({"a": [1, 2, 3, 4], "b": [0.1, -0.2, 0.05, 0.0],
                            "c": [2, 2.5, 3, 2.8], "one seed": [0.3]})
  # raw p: c 0.001295, a 0.030466, b 0.861354 -> Holm: c x 3 = 0.003885, a x 2 = 0.060933, b x 1.
  assert fam["c"]["p_holm"] == pytest.approx(3 * fam["c"]["p"])
  assert fam["a"]["p_holm"] == pytest.approx(2 * 0.030466, abs=1e-5)
  assert fam["b"]["p_holm"] == pytest.approx(fam["b"]["p"])
  assert [k for k, v in fam.items() if v["survives"]] == ["c"]     # a's raw p < 0.05 does not
  assert fam["a"]["p"] < 0.05 and fam["a"]["m"] == 3
  # a's Holm step is alpha / 2: t_0.9875(3) = 4.176535 -> half-width 4.176535 x 0.645497
  assert fam["a"]["ci_holm"] == pytest.approx(4.176535 * 0.645497, rel=1e-5)
  assert fam["b"]["ci_holm"] == pytest.approx(fam["b"]["ci"])
  assert not fam["one seed"]["survives"] and "ci_holm" not in fam["one seed"]


def test_seeds_for_power_matches_published_tables():
  # Cohen's paired-t tables (R pwr.t.test(type="paired"), power 0.8, two-sided 0.05):
  # d = 0.5 -> n = 33.4 (34), d = 0.8 -> 14.3 (15), d = 1 -> 9.94 (10).
  assert report.seeds_for_power(1.0, 0.5) == 34
  assert report.seeds_for_power(1.0, 0.8) == 15
  assert report.seeds_for_power(0.1, 0.1) == 10
  assert report.seeds_for_power(0.055, 0.05) == 12           # the suppression study's plan
  with pytest.raises(ValueError, match="sd"):
    report.seeds_for_power(0.0, 0.05)


def test_paired_cell_marks_only_survivors():
  """Hand-worked: diffs (1, 2, 3) have mean 2, sd 1, ci = t(0.975, 2) / sqrt(3) = 2.484;
  a family with an endpoint far from 0 and one at 0 marks only the first."""
  family = report.holm_family({"moved": [1.0, 1.1, 0.9, 1.05], "still": [0.1, -0.1, 0.05, -0.05]})
  assert report.paired_cell(family["moved"]).endswith(report.HOLM_MARK)
  assert report.HOLM_MARK not in report.paired_cell(family["still"])
  assert report.paired_cell(report.paired_t([1.0, 2.0, 3.0])) == "+2.000 ± 2.484"
  assert report.paired_cell(report.paired_t([0.5])) == "+0.500"
