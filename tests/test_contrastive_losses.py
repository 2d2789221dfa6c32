"""The fair-SigLIP comparison: its flags, the bias init for the batch, the learning-rate choice."""
import pytest

from experiments import contrastive_losses as cl
from experiments import contrastive_losses_report as rep
from invariance import dual_encoder as de
from tests import cli

FLAGS = "experiments/configs/contrastive_losses.flags"


def test_flagfile_parses_and_bad_flags_are_refused():
  assert cli.flag_error(cl.LossesConfig, f"--flagfile={FLAGS}") == ""
  for args, flag in ((["--mention_probs=0"], "mention_probs"),
                     (["--num_validation=100"], "num_validation"),
                     (["--siglip_bias_init=zero"], "siglip_bias_init"),
                     (["--learning_rates=0"], "learning_rates")):
    message = cli.flag_error(cl.LossesConfig, f"--flagfile={FLAGS}", *args)
    assert flag in message and "\n" not in message, message


def test_siglip_bias_for_batch():
  import math
  assert de.siglip_bias_for_batch(128) == pytest.approx(-math.log(127))
  # sigmoid(b) = 1 / B: the initial probability of a pair is the batch's share of positives
  assert 1 / (1 + math.exp(-de.siglip_bias_for_batch(128))) == pytest.approx(1 / 128)
  with pytest.raises(ValueError, match="batch_size"):
    de.siglip_bias_for_batch(1)


def _row(loss, lr, p, seed, val, light):
  return {"loss": loss, "lr": lr, "p": p, "seed": seed, "validation_loss": val,
          "probe": {"embedding": {"light": light}}}


def test_learning_rate_is_chosen_per_loss_on_validation_at_p1():
  rows = [_row("clip", 1e-3, 1.0, s, 3.0, 0.9) for s in (0, 1)]
  rows += [_row("clip", 3e-3, 1.0, s, 3.2, 0.99) for s in (0, 1)]       # better probe, worse loss
  rows += [_row("clip", 3e-3, 0.0, s, 1.0, 0.5) for s in (0, 1)]        # p = 0 does not choose
  rows += [_row("siglip", 1e-3, 1.0, s, 9.0, 0.7) for s in (0, 1)]
  rows += [_row("siglip", 3e-3, 1.0, s, 8.0, 0.8 + 0.01 * s) for s in (0, 1)]
  chosen = rep.chosen_rates(rows)
  assert chosen == {"clip": 1e-3, "siglip": 3e-3}
  comp = rep.comparison(rows, chosen)
  assert comp["1"]["mean"] == pytest.approx(0.9 - 0.805) and comp["1"]["n"] == 2
