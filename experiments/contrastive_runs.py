"""The contrastive study's runs and names, defined once for the main and the report.

A ``Run`` is one trained tower: what varies between runs (loss, embedding dim, p, caption policy,
lamp size, duplicate-caption scoring, training length) and the seed. Its workdir row is
``Run.key``; the rows of the tower at initialisation and of the raw pixels are ``init_key`` and
``pixels_key``. ``grid(cfg)`` lists every run of a config, seeds outermost.
"""
from __future__ import annotations

import dataclasses

from invariance import dashcam

LAYERS = ("block1_grid", "block1_pool", "block2_grid", "block2_pool", "block3_grid", "block3_pool",
          "penultimate", "embedding")


@dataclasses.dataclass(frozen=True)
class Run:
  loss: str
  dim: int
  p: float
  policy: str
  lamp_size: int
  multi_positive: bool
  steps: int
  seed: int
  longest: bool          # trained for the config's longest --steps (its name has no length suffix)
  traced: bool           # probed layer by layer at --probe_steps through training

  @property
  def name(self) -> str:
    """The run's checkpoint and metrics name (``dashcam.run_key``), the same for every seed."""
    return dashcam.run_key(self.loss, self.p, self.dim, policy=self.policy,
                           lamp_size=self.lamp_size, multi_positive=self.multi_positive,
                           steps=None if self.longest else self.steps)

  @property
  def key(self) -> str:
    return f"{self.name}_seed{self.seed}"

  def trace_key(self, step: int) -> str:
    return f"{self.key}_step{step}"

  @property
  def init_key(self) -> str:
    return init_key(self.dim, self.lamp_size, self.seed)

  @property
  def duplicates(self) -> str:
    return "positive" if self.multi_positive else "negative"


def init_key(dim: int, lamp_size: int, seed: int) -> str:
  return f"init_d{dim}_lamp{lamp_size}_seed{seed}"


def pixels_key(lamp_size: int, seed: int) -> str:
  return f"pixels_lamp{lamp_size}_seed{seed}"


def grid(cfg) -> list[Run]:
  """Every run of ``cfg`` (a ``ContrastiveConfig``): seeds, then lamp sizes outermost (the order
  the study trains them in), then loss x dim x policy x duplicates x steps x p."""
  longest = max(cfg.steps)
  return [Run(loss, dim, p, policy, lamp, dup == "positive", steps, seed, steps == longest,
              steps == longest and p in cfg.trace_probs)
          for seed in cfg.seeds for lamp in cfg.lamp_sizes
          for loss in cfg.losses for dim in cfg.embed_dims for policy in cfg.policies
          for dup in cfg.duplicate_captions for steps in cfg.steps for p in cfg.mention_probs]


def final_loss(history: dict):
  """The last logged training loss of a ``train.fit`` history (None if nothing was logged)."""
  return history["loss"][-1] if history["loss"] else None
