"""The caption study's third edition (``python -m experiments.contrastive_suppression``): its config,
every parameter declared once (``experiments.config``). The pre-registered endpoint and decision
rule are constants of ``experiments.contrastive_suppression_report`` (not flags: a flag could move
them after the data are in)."""
from __future__ import annotations

import dataclasses

from experiments import config
from invariance.data import scenes

STARTS = ("p1", "init")
TEMPERATURES = ("learned", "fixed")


@dataclasses.dataclass(frozen=True)
class SuppressionConfig(config.StudyConfig):
  starts: tuple[str, ...] = config.param(
      ("p1",), "Starting towers: 'p1' (trained --start_steps on captions that always mention the "
      "light) or 'init' (the random tower); each is continued on p = 0 and on p = 1 captions.",
      choices=STARTS)
  lamp_sizes: tuple[int, ...] = config.param((2,), "Lamp side in pixels.",
                                             choices=scenes.LAMP_SIZES, sort=True)
  weight_decays: tuple[float, ...] = config.param(
      (0.2,), "AdamW decoupled weight decay of the continuation (0.2 as CLIP; 0 = Adam).", low=0)
  temperatures: tuple[str, ...] = config.param(
      ("learned",), "The loss temperature during the continuation: 'learned' or 'fixed' at its "
      "starting value.", choices=TEMPERATURES)
  embed_dim: int = config.param(8, "Embedding dimension.", low=1)
  start_steps: int = config.param(400, "Steps of the 'p1' start (Adam, p = 1 captions).", low=1)
  continue_steps: int = config.param(400, "Steps of every continuation (p = 0 and its p = 1 "
                                     "control see identical image batches).", low=1)
  probe_steps: tuple[int, ...] = config.param(
      (0, 100, 200, 400), "Continuation steps at which every layer is probed (0 = the start); the "
      "last must be --continue_steps.", low=0, sort=True)
  batch_size: int = config.param(128, "Batch size.", low=2)
  learning_rate: float = config.param(1e-3, "Peak learning rate (linear warmup, cosine decay), "
                                      "start and continuation.", above=0)
  warmup_steps: int = config.param(50, "Warmup steps of each schedule.", low=0)
  num_train: int = config.param(20000, "Training scenes (red cars excluded).", low=2)
  num_probe: int = config.param(1000, "Scenes in each probe split.", low=8)
  num_pairs: int = config.param(500, "Counterfactual pairs per attribute.", low=2)

  def validate(self):
    if self.probe_steps[-1] != self.continue_steps:
      config.fail("probe_steps", ",".join(map(str, self.probe_steps)),
                  f"allowed: steps ending at --continue_steps={self.continue_steps}")
    if self.warmup_steps >= min(self.start_steps, self.continue_steps):
      config.fail("warmup_steps", self.warmup_steps,
                  "allowed: < --start_steps and < --continue_steps")
    if self.batch_size > self.num_train:
      config.fail("batch_size", self.batch_size, f"allowed: <= --num_train={self.num_train}")

  def arms(self) -> list[dict]:
    """Every continuation arm (each is run at p = 0 and at p = 1)."""
    return [dict(start=s, lamp_size=lamp, weight_decay=wd, temperature=t)
            for s in self.starts for lamp in self.lamp_sizes for wd in self.weight_decays
            for t in self.temperatures]


def arm_name(arm: dict, p: float | None = None) -> str:
  """E.g. ``p1_lamp2_wd0.2_learned`` (the start tower: ``p1_lamp2``), ``..._cont_p0`` with p."""
  if "weight_decay" not in arm:
    return f"{arm['start']}_lamp{arm['lamp_size']}"
  name = f"{arm['start']}_lamp{arm['lamp_size']}_wd{arm['weight_decay']:g}_{arm['temperature']}"
  return name if p is None else f"{name}_cont_p{p:g}"


config.define_flags(SuppressionConfig)
