"""The third edition: flags, the pre-registered decision rule, the paired contrasts, distances."""
import glob

import numpy as np
import pytest

from experiments import contrastive_suppression as cs
from experiments import contrastive_suppression_report as rep
from experiments import report
from experiments.contrastive_suppression_config import SuppressionConfig, arm_name
from invariance import evaluate
from tests import cli

DEFAULT = "experiments/configs/contrastive_suppression.flags"


def test_every_flagfile_parses_and_the_default_is_the_preregistered_primary():
  files = sorted(glob.glob("experiments/configs/contrastive_suppression*.flags"))
  assert DEFAULT in files
  for path in files:
    assert cli.flag_error(SuppressionConfig, f"--flagfile={path}") == "", path
  from absl import flags
  from experiments import config
  fv = flags.FlagValues()
  config.define_flags(SuppressionConfig, fv)
  fv(["prog", f"--flagfile={DEFAULT}"])
  cfg = config.from_flags(SuppressionConfig, fv)
  assert cfg.arms() == [rep.PRIMARY] and len(cfg.seeds) == rep.PLANNED_SEEDS
  assert rep.PLANNED_SEEDS == report.seeds_for_power(rep.PRIOR_SD, rep.EFFECT)


@pytest.mark.parametrize("args, flag", [
    (["--probe_steps=0,100"], "probe_steps"),
    (["--warmup_steps=400"], "warmup_steps"),
    (["--temperatures=frozen"], "temperatures"),
    (["--starts=p2"], "starts"),
    (["--weight_decays=-0.1"], "weight_decays"),
])
def test_bad_flags_are_refused_naming_the_flag(args, flag):
  message = cli.flag_error(SuppressionConfig, f"--flagfile={DEFAULT}", *args)
  assert flag in message and "\n" not in message


def test_decision_rule():
  d = lambda mean, ci, n=12: {"mean": mean, "ci": ci, "n": n}
  assert rep.decide(d(-0.08, 0.03)) == "suppressed"
  assert rep.decide(d(0.0, 0.03)) == "kept"
  assert rep.decide(d(0.0, 0.03), start_holds=False) == "never learned"
  assert rep.decide(d(-0.03, 0.04)) == "not decided at this power"       # reaches -0.07
  assert rep.decide(d(0.02, 0.04)) == "not decided at this power"
  assert rep.decide(d(-0.1, float("nan"), 1)) == "not decided at this power"


def _rows(diffs, arm=rep.PRIMARY):
  rows, starts = [], []
  for seed, diff in enumerate(diffs):
    at = lambda v: {"probe": {"embedding": {"light": v}}}
    starts.append({"seed": seed, "start": arm["start"], "lamp_size": arm["lamp_size"], **at(0.9)})
    rows.append({"seed": seed, **arm, "p": 1.0, **at(0.95)})
    rows.append({"seed": seed, **arm, "p": 0.0, **at(0.95 + diff)})
  return rows, starts


def test_primary_is_the_paired_contrast_by_seed():
  diffs = [-0.1, -0.12, -0.08, -0.11]
  rows, starts = _rows(diffs)
  got = rep.primary(rows, starts)
  assert got["diffs"] == pytest.approx(diffs)
  want = report.paired_t(diffs)
  assert got["mean"] == pytest.approx(want["mean"]) and got["ci"] == pytest.approx(want["ci"])
  assert got["decision"] == "suppressed" and got["start"] == pytest.approx(0.9)
  assert rep.from_start(rows, starts, rep.PRIMARY, "probe/embedding/light") == pytest.approx(
      [0.95 + d - 0.9 for d in diffs])
  other = dict(rep.PRIMARY, weight_decay=0.0)
  assert not rep.primary(*_rows(diffs, other))["present"]              # another arm is not it


def test_pair_distances_give_evaluates_sensitivity():
  rng = np.random.default_rng(0)
  a = {"x": rng.normal(size=(20, 3)), "y": rng.normal(size=(20, 2, 2))}
  b = {"x": a["x"] + 0.1 * rng.normal(size=(20, 3)), "y": rng.normal(size=(20, 2, 2))}
  dist, ratio = cs.pair_distances(a, b), evaluate.pair_sensitivity(a, b)
  for layer, (num, den) in dist.items():
    assert num / den == pytest.approx(ratio[layer])
  assert dist["x"][0] < dist["x"][1]


def test_names():
  arm = dict(start="p1", lamp_size=2, weight_decay=0.2, temperature="learned")
  assert arm_name(arm, 0.0) == "p1_lamp2_wd0.2_learned_cont_p0"
  assert arm_name({"start": "init", "lamp_size": 4}) == "init_lamp4"


def test_detectable_effect_inverts_the_power_computation():
  for sd, n in ((0.055, 12), (0.017, 4), (0.2, 30)):
    e = rep.detectable_effect(sd, n)
    assert report.seeds_for_power(sd, e) == n and report.seeds_for_power(sd, 0.98 * e) > n


def test_post_hoc_holding_keeps_only_starts_that_hold_the_light():
  rows, starts = _rows([-0.1, -0.4, -0.08])
  starts[1]["probe"]["embedding"]["light"] = 0.6                 # this start never learned it
  got = rep.primary(rows, starts)["post_hoc_holding"]
  assert got["seeds"] == [0, 2] and got["mean"] == pytest.approx(-0.09)
