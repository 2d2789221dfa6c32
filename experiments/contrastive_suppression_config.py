"""The suppression study's config (``python -m experiments.contrastive_suppression``): every parameter
declared once, the defaults being the pre-registered primary run; and its typed runs.

The pre-registered endpoint and decision rule are constants of
``experiments.contrastive_suppression_report`` (not flags: a flag could move them after the data
are in).
"""
from __future__ import annotations

import dataclasses

from experiments import caption_towers
from experiments import config
from invariance.data import scenes

STARTS = ("p1", "init")
TEMPERATURES = ("learned", "fixed")
CONTINUE_PS = (0.0, 1.0)       # every arm: the p = 0 continuation and its p = 1 control
CONTINUE_STREAM = 1_000        # the continuation's batch order: seed + this (both p alike)
RATE_MAX = 1.0


@dataclasses.dataclass(frozen=True)
class SuppressionConfig(config.StudyConfig, caption_towers.TowerConfig):
  seeds: tuple[int, ...] = config.param(
      tuple(range(12)), "Seeds (data, init and batch order); the pre-registered 12.", low=0,
      high=2**32 - 1)
  starts: tuple[str, ...] = config.param(
      ("p1",), "Starting towers: 'p1' (trained --start_steps on captions that always mention the "
      "light) or 'init' (the random tower); each is continued on p = 0 and on p = 1 captions.",
      choices=STARTS)
  lamp_sizes: tuple[int, ...] = config.param((2,), "Lamp side in pixels.",
                                             choices=scenes.LAMP_SIZES, sort=True)
  weight_decays: tuple[float, ...] = config.param(
      (0.2,), "AdamW decoupled weight decay of the continuation (0.2 as CLIP; 0 = Adam).", low=0,
      high=100)
  temperatures: tuple[str, ...] = config.param(
      ("learned",), "The loss temperature during the continuation: 'learned' or 'fixed' at its "
      "starting value.", choices=TEMPERATURES)
  start_steps: int = config.param(400, "Steps of the 'p1' start (Adam, p = 1 captions).", low=1,
                                  high=config.STEPS_MAX)
  continue_steps: int = config.param(400, "Steps of every continuation (p = 0 and its p = 1 "
                                     "control see identical image batches).", low=1,
                                     high=config.STEPS_MAX)
  probe_steps: tuple[int, ...] = config.param(
      (0, 400), "Continuation steps at which every layer is probed (0 = the start); the last "
      "must be --continue_steps. Steps between trace the continuation (the grids add 200).",
      low=0, high=config.STEPS_MAX, sort=True)
  learning_rate: float = config.param(1e-3, "Peak learning rate (linear warmup, cosine decay), "
                                      "start and continuation.", above=0, high=RATE_MAX)
  warmup_steps: int = config.param(50, "Warmup steps of each schedule.", low=0,
                                   high=config.STEPS_MAX)
  log_every: int = config.param(100, "Steps between progress lines.", low=1, run_only=True)
  checkpoint_every: int = config.param(200, "Steps between checkpoints (a killed continuation "
                                       "resumes from its last one).", low=1, run_only=True)

  def validate(self):
    self.check_towers()
    if self.probe_steps[-1] != self.continue_steps:
      config.fail("probe_steps", ",".join(map(str, self.probe_steps)),
                  f"allowed: steps ending at --continue_steps={self.continue_steps}")
    if self.warmup_steps >= min(self.start_steps, self.continue_steps):
      config.fail("warmup_steps", self.warmup_steps,
                  "allowed: < --start_steps and < --continue_steps")
    if max(self.weight_decays) * self.learning_rate >= 1:
      config.fail("weight_decays", ",".join(f"{w:g}" for w in self.weight_decays),
                  f"allowed: values whose product with --learning_rate={self.learning_rate:g} is "
                  "< 1 (a larger decoupled decay step flips the weights' sign)")

  def arms(self) -> list["Arm"]:
    """Every continuation arm (each is run at p = 0 and at p = 1)."""
    return [Arm(s, lamp, wd, t) for s in self.starts for lamp in self.lamp_sizes
            for wd in self.weight_decays for t in self.temperatures]

  def runs(self) -> list["StartRun | Continuation"]:
    """Per seed and start tower: the start's row, then its continuations."""
    out = []
    for seed in self.seeds:
      for lamp in self.lamp_sizes:
        for start in self.starts:
          tower = StartRun(start, lamp, seed)
          out.append(tower)
          out += [Continuation(arm, p, seed) for arm in self.arms()
                  if (arm.start, arm.lamp_size) == (start, lamp) for p in CONTINUE_PS]
    return out


@dataclasses.dataclass(frozen=True)
class StartRun:
  """A start tower of one seed, measured before any continuation."""
  start: str
  lamp_size: int
  seed: int

  @property
  def name(self) -> str:
    """E.g. ``p1_lamp2`` (also its training run's checkpoint directory, prefixed ``start_``)."""
    return f"{self.start}_lamp{self.lamp_size}"

  @property
  def key(self) -> str:
    return f"start_{self.name}_seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Arm:
  """How a start tower is continued: with which lamp, weight decay and temperature."""
  start: str
  lamp_size: int
  weight_decay: float
  temperature: str

  @property
  def name(self) -> str:
    """E.g. ``p1_lamp2_wd0.2_learned``."""
    return f"{self.start}_lamp{self.lamp_size}_wd{self.weight_decay:g}_{self.temperature}"

  def fields(self) -> dict:
    """The arm as a row's fields (``start``, ``lamp_size``, ``weight_decay``, ``temperature``)."""
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Continuation:
  """An arm's start tower of ``seed`` continued on captions that mention the light with
  probability ``p`` (0, or 1 for the control)."""
  arm: Arm
  p: float
  seed: int

  @property
  def tower(self) -> StartRun:
    return StartRun(self.arm.start, self.arm.lamp_size, self.seed)

  @property
  def name(self) -> str:
    """E.g. ``p1_lamp2_wd0.2_learned_cont_p0`` (its checkpoint directory)."""
    return f"{self.arm.name}_cont_p{self.p:g}"

  @property
  def key(self) -> str:
    return f"{self.name}_seed{self.seed}"

  def trace_key(self, step: int) -> str:
    """The row of its measurement at a ``--probe_steps`` step before the last."""
    return f"{self.key}_step{step}"


config.define_flags(SuppressionConfig)
