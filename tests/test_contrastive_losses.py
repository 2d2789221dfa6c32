"""The losses comparison: the default is the config, sizes refused before any work, the CLI end to
end (smoke flagfile, rerun reusing rows), the bias init for the batch, the learning-rate choice
(diverged rates excluded, edges marked) and the stated reading."""
import dataclasses
import json
import pathlib
import math
import os

import pytest

from experiments import config
from experiments import contrastive_losses_report as rep
from experiments import report
from experiments.contrastive_losses_config import LossesConfig, LossRun
from invariance import dual_encoder as de
from tests import cli

DEFAULT = "experiments/configs/contrastive_losses.flags"
SMOKE = "experiments/configs/contrastive_losses_smoke.flags"
HUGE = "1" * 30
SIZES = ["seeds", "selection_seeds", "embed_dim", "batch_size", "num_train", "num_validation",
         "num_probe", "num_pairs", "steps", "warmup_steps", "learning_rates"]


def test_default_flagfile_is_the_config_default_and_the_planned_seeds():
  from absl import flags
  fv = flags.FlagValues()
  config.define_flags(LossesConfig, fv)
  fv(["prog", f"--flagfile={os.path.join(cli.ROOT, DEFAULT)}"])
  cfg = config.from_flags(LossesConfig, fv)
  assert cfg == LossesConfig(workdir="workdir/contrastive_losses_fair")
  lines = [ln for ln in open(os.path.join(cli.ROOT, DEFAULT)) if not ln.startswith("#")]
  assert lines == ["--workdir=workdir/contrastive_losses_fair\n"]
  assert len(cfg.seeds) == rep.PLANNED_SEEDS
  # the stated power: PLANNED_SEEDS seeds detect PLANNED_EFFECT at the prior sd with 80% power
  assert report.seeds_for_power(rep.PRIOR_SD, rep.PLANNED_EFFECT + 1e-3) == rep.PLANNED_SEEDS
  assert report.seeds_for_power(rep.PRIOR_SD, rep.PLANNED_EFFECT - 5e-3) > rep.PLANNED_SEEDS
  assert report.seeds_for_power(rep.PRIOR_SD, rep.EFFECT) == 176


@pytest.mark.parametrize("flag", SIZES)
def test_a_30_digit_value_is_refused_naming_the_flag(flag):
  message = cli.flag_error(LossesConfig, f"--flagfile={SMOKE}", f"--{flag}={HUGE}")
  assert message.startswith(f"--{flag}=") and "allowed" in message and "\n" not in message


def test_bad_flags_are_refused():
  assert cli.flag_error(LossesConfig, f"--flagfile={SMOKE}") == ""              # the control
  for args, flag in ((["--num_validation=100"], "num_validation"),
                     (["--siglip_bias_init=zero"], "siglip_bias_init"),
                     (["--learning_rates=0"], "learning_rates"),
                     (["--learning_rates=2"], "learning_rates"),
                     (["--warmup_steps=8"], "warmup_steps")):
    message = cli.flag_error(LossesConfig, f"--flagfile={SMOKE}", *args)
    assert flag in message and "\n" not in message, message


def test_siglip_bias_for_batch():
  assert de.siglip_bias_for_batch(128) == pytest.approx(-math.log(127))
  # sigmoid(b) = 1 / B: the initial probability of a pair is the batch's share of positives
  assert 1 / (1 + math.exp(-de.siglip_bias_for_batch(128))) == pytest.approx(1 / 128)
  with pytest.raises(ValueError, match="batch_size"):
    de.siglip_bias_for_batch(1)


def _row(loss, lr, p, seed, val, light, diverged=None):
  return {"loss": loss, "lr": lr, "p": p, "seed": seed, "validation_loss": val,
          "diverged": diverged, "probe": {"embedding": {"light": light}}}


def test_learning_rate_is_chosen_per_loss_on_validation_at_p1():
  rows = [_row("clip", 1e-3, 1.0, s, 3.0, 0.9) for s in (0, 1)]
  rows += [_row("clip", 3e-3, 1.0, s, 3.2, 0.99) for s in (0, 1)]       # better probe, worse loss
  rows += [_row("clip", 3e-3, 0.0, s, 1.0, 0.5) for s in (0, 1)]        # p = 0 does not choose
  rows += [_row("siglip", 1e-3, 1.0, s, 9.0, 0.7) for s in (0, 1)]
  rows += [_row("siglip", 3e-3, 1.0, s, 8.0, 0.8 + 0.01 * s) for s in (0, 1)]
  rows += [_row("siglip", 1e-2, 1.0, 0, 1.0, 0.9), _row("siglip", 1e-2, 1.0, 1, None, None, "nan")]
  sel = rep.selection(rows, [0, 1])
  assert sel["siglip"]["validation_loss"]["0.01"] is None              # a seed diverged
  assert rep.chosen_rates(rows) == {"clip": 1e-3, "siglip": 3e-3}
  assert sel["clip"]["edge"] and not sel["siglip"]["edge"]
  diffs = rep.differences(rows, {"clip": 1e-3, "siglip": 3e-3}, ("probe", "light"))
  assert diffs == pytest.approx([0.9 - 0.8, 0.9 - 0.81])


def test_the_stated_reading():
  d = lambda mean, ci, n=22: {"mean": mean, "ci": ci, "n": n}
  assert rep.read(d(0.2, 0.1)) == "CLIP holds more light"
  assert rep.read(d(-0.2, 0.1)) == "SigLIP holds more light"
  assert rep.read(d(0.0, 0.04)) == "equal within 0.05"
  assert rep.read(d(0.03, 0.04)) == "not decided at this power"
  assert rep.read(d(0.3, float("nan"), 1)) == "not decided at this power"


def test_comparison_runs_reuse_the_selection_rows():
  cfg = dataclasses.replace(LossesConfig(workdir="x"), seeds=(0, 1, 5), selection_seeds=(0, 1))
  chosen = {"clip": 3e-3, "siglip": 1e-2}
  sel = {r.key for r in cfg.selection_runs()}
  comp = cfg.comparison_runs(chosen)
  assert {r.key for r in comp} & sel == {"clip_lr0.003_p1_seed0", "clip_lr0.003_p1_seed1",
                                         "siglip_lr0.01_p1_seed0", "siglip_lr0.01_p1_seed1"}
  assert LossRun("clip", 3e-3, 1.0, 5).key == "clip_lr0.003_p1_seed5"
  assert cfg.comparison_runs({"clip": 3e-3}) == [r for r in comp if r.loss == "clip"]


def test_smoke_end_to_end_then_a_rerun_reuses_every_row(smoke_runs):
  workdir = pathlib.Path(smoke_runs.workdir("contrastive_losses"))  # run beside the suite
  results = json.loads((workdir / "results.json").read_text())
  rows = results["rows"]
  assert len([r for r in rows if r["seed"] == 0]) == 4                 # 2 losses x 2 rates
  chosen = {loss: s["chosen"] for loss, s in results["selection"].items()}
  assert {(r["loss"], r["lr"]) for r in rows if r["seed"] == 1} == set(chosen.items())
  assert results["comparison"]["light"]["n"] == 2
  assert "CLIP minus SigLIP" in (workdir / "results.md").read_text()
  again = cli.run_ok("contrastive_losses", f"--flagfile={SMOKE}", f"--workdir={workdir}")
  assert again.count("already finished, reusing its row") == 6, again
  assert json.loads((workdir / "results.json").read_text())["comparison"] == results["comparison"]


def test_untrained_towers_are_counted_not_dropped():
  # constant logits: CLIP log B; SigLIP -[log(1/B) + (B - 1) log(1 - 1/B)], by hand at B = 128
  assert rep.constant_loss("clip", 128) == pytest.approx(4.85203, abs=1e-5)
  assert rep.constant_loss("siglip", 128) == pytest.approx(4.85203 + 0.99609, abs=1e-4)
  rows = [{"loss": "siglip", "validation_loss": v} for v in (5.8481, 5.845, 5.83, 4.47)]
  rows += [{"loss": "clip", "validation_loss": 4.8521}, {"loss": "clip", "validation_loss": 3.2}]
  rows.append({"loss": "clip", "diverged": "nan", "validation_loss": None})   # not counted
  assert rep.untrained(rows, 128) == 3


def test_trained_only_drops_seeds_where_either_tower_learned_nothing():
  rows = [_row("clip", 3e-3, 1.0, s, 3.1, 0.9 + 0.01 * s) for s in range(3)]
  rows += [_row("siglip", 3e-3, 1.0, 0, 4.4, 0.8), _row("siglip", 3e-3, 1.0, 1, 5.848, 0.5),
           _row("siglip", 3e-3, 1.0, 2, 4.5, 0.85)]
  chosen = {"clip": 3e-3, "siglip": 3e-3}
  assert rep.trained_only(rows, chosen, 128) == pytest.approx([0.9 - 0.8, 0.92 - 0.85])
  assert len(rep.differences(rows, chosen, ("probe", "light"))) == 3          # the endpoint: all
