"""The losses comparison's config (``python -m experiments.contrastive_losses``): every parameter
declared once, the defaults being the documented run; and its typed runs.

Two stages. Selection: every loss x learning rate at p = 1 on ``--selection_seeds``; each loss's
rate is the one of lowest mean validation loss (a rate at which any seed diverged cannot be
chosen). Comparison: each loss at its chosen rate, every ``--mention_probs``, on ``--seeds``
(runs the selection already made are reused, not repeated).
"""
from __future__ import annotations

import dataclasses

from experiments import caption_towers
from experiments import cli
from experiments import config
from invariance import dual_encoder as de
from invariance.data import scenes

BIAS_INITS = ("batch", "paper")
RATE_MAX = 1.0
SELECTION_P = 1.0           # the learning rate is chosen on captions that name the light


@dataclasses.dataclass(frozen=True)
class LossesConfig(config.StudyConfig, caption_towers.TowerConfig):
  seeds: tuple[int, ...] = config.param(
      tuple(range(10)), "Comparison seeds: each loss at its chosen learning rate.", low=0,
      high=2**32 - 1)
  selection_seeds: tuple[int, ...] = config.param(
      (0, 1, 2), "Seeds of the learning-rate selection (every loss x rate, p = 1).", low=0,
      high=2**32 - 1)
  losses: tuple[str, ...] = config.param(("clip", "siglip"), "Losses compared.", choices=de.LOSSES)
  learning_rates: tuple[float, ...] = config.param(
      (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "Peak Adam learning rates tried per loss (chosen on "
      "validation).", above=0, high=RATE_MAX, sort=True)
  mention_probs: tuple[float, ...] = config.param((1.0,), "p of the comparison runs.", low=0,
                                                  high=1, sort=True)
  siglip_bias_init: str = config.param("batch", "SigLIP's initial bias: 'batch' = -log(B - 1), "
                                       "'paper' = -10.", choices=BIAS_INITS)
  lamp_size: int = config.param(2, "Lamp side in pixels.", choices=scenes.LAMP_SIZES)
  steps: int = config.param(400, "Training steps.", low=1, high=config.STEPS_MAX)
  warmup_steps: int = config.param(50, "Warmup steps.", low=0, high=config.STEPS_MAX)
  num_validation: int = config.param(2048, "Validation scenes (their loss picks the learning "
                                     "rate); a multiple of --batch_size.", low=2)

  def validate(self):
    self.check_towers()
    cli.check_memory("num_validation", self.num_validation, float(min(
        caption_towers.SCENE_BYTES * caption_towers.DRAWN * self.num_validation, 10**300)))
    if self.num_validation % self.batch_size:
      config.fail("num_validation", self.num_validation,
                  f"allowed: a multiple of --batch_size={self.batch_size}")
    if self.warmup_steps >= self.steps:
      config.fail("warmup_steps", self.warmup_steps, f"allowed: < --steps={self.steps}")

  def selection_runs(self) -> list["LossRun"]:
    return [LossRun(loss, lr, SELECTION_P, seed) for seed in self.selection_seeds
            for loss in self.losses for lr in self.learning_rates]

  def comparison_runs(self, chosen: dict[str, float]) -> list["LossRun"]:
    """Each loss at its chosen rate (a loss that diverged at every rate has none: no runs)."""
    return [LossRun(loss, chosen[loss], p, seed) for seed in self.seeds for loss in self.losses
            if loss in chosen for p in self.mention_probs]


@dataclasses.dataclass(frozen=True)
class LossRun:
  """One trained tower: a loss at a peak learning rate on captions that name the light with
  probability ``p``, from ``seed``'s data, init and batch order."""
  loss: str
  lr: float
  p: float
  seed: int

  @property
  def name(self) -> str:
    """The run without its seed (its metrics directory): ``clip_lr0.003_p1``."""
    return f"{self.loss}_lr{self.lr:g}_p{self.p:g}"

  @property
  def key(self) -> str:
    """The row's name in the workdir: ``clip_lr0.003_p1_seed0``."""
    return f"{self.name}_seed{self.seed}"


config.define_flags(LossesConfig)
