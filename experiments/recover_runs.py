"""The recovery study's names and typed runs, defined once for its config, main and report.

Curves on the labelled-scenes axis are frozen-tower probes (``PROBES``: the p0 tower's are methods,
the p1 and init towers' are references) and trained methods (``TRAINED``: one ``Recipe`` each).
Re-captioning runs start from the towers of ``STARTS``. Each row of the study is one typed run
(``Pretrain``, ``Curve``, ``Recaption``) whose ``key`` names it in the workdir.
"""
from __future__ import annotations

import dataclasses

from invariance import dashcam
from invariance import recovery

LIGHT = dashcam.LIGHT
TOWER_P = {"p0": 0.0, "p1": 1.0}      # how often the towers' training captions mention the light
REFERENCES = ("p1", "init")           # towers probed like p0: upper and lower reference
STARTS = ("p0", "init", "p1")         # where matched-step re-captioning starts
READ = ("penultimate", "embedding")   # the tower layers the probes read


@dataclasses.dataclass(frozen=True)
class Probe:
  """A linear probe (C = 1) on a frozen tower's layer."""
  tower: str
  representation: str


def probe_curve(tower: str, representation: str) -> str:
  return (("probe" if tower == "p0" else f"{tower}_probe")
          + ("" if representation == "embedding" else "_penultimate"))


def curves(methods, references) -> list[str]:
  """Every curve on the n axis: the methods, then the reference towers' probes."""
  return list(methods) + [probe_curve(t, r) for t in references
                          for r in ("embedding", "penultimate")]


PROBES = {probe_curve(t, r): Probe(t, r) for t in ("p0",) + REFERENCES
          for r in ("embedding", "penultimate")}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A trained method: the tower its image encoder starts from, the encoder layers that stay
  frozen, and whether its head starts as the linear probe on the frozen features (LP-FT)."""
  tower: str
  frozen: tuple[str, ...] = ()
  probe_head: bool = False


LAST_BLOCK = recovery.LAST_BLOCK_FROZEN
TRAINED = {"finetune": Recipe("p0"), "lpft": Recipe("p0", probe_head=True),
           "lastblock": Recipe("p0", LAST_BLOCK), "scratch": Recipe("init"),
           "finetune_p1": Recipe("p1"), "lastblock_init": Recipe("init", LAST_BLOCK)}
METHODS = ("probe", "probe_penultimate") + tuple(TRAINED)

# Paired differences (a - b, per seed) the report reads; each tuple of pairs is one Holm family
# (across its pairs and every n, or every re-captioning step).
PROBE_CONTRASTS = (("probe", "init_probe"), ("probe_penultimate", "init_probe_penultimate"),
                   ("p1_probe", "probe"), ("p1_probe_penultimate", "probe_penultimate"))
TRAINED_CONTRASTS = (("finetune", "scratch"), ("lastblock", "lastblock_init"),
                     ("finetune_p1", "finetune"), ("lpft", "finetune"),
                     ("lastblock", "finetune"))
RECAPTION_CONTRASTS = (("p0", "init"), ("p1", "init"))


def tune_run(method: str, n: int, lr: float) -> str:
  """The training run of a trained method at n and one learning rate (its metrics file)."""
  return f"{method}_n{n}_lr{lr:g}"


def recaption_run(start: str, fraction: float) -> str:
  return f"recaption_{start}_f{fraction:g}"


@dataclasses.dataclass(frozen=True)
class Pretrain:
  """Where the p0 / p1 tower of a seed comes from (trained here, or a loaded checkpoint)."""
  tower: str
  seed: int

  @property
  def key(self) -> str:
    return f"pretrain{'' if self.tower == 'p0' else '_' + self.tower}_seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Curve:
  """One curve (a probe or a trained method) at n labelled scenes, one seed."""
  curve: str
  n: int
  seed: int

  @property
  def key(self) -> str:
    return f"{self.curve}_n{self.n}_seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Recaption:
  """The light probe after ``step`` re-captioning steps from ``start`` (step 0: the start)."""
  start: str
  fraction: float
  step: int
  seed: int

  @property
  def run(self) -> str:
    return recaption_run(self.start, self.fraction)

  @property
  def key(self) -> str:
    return f"{self.run}_s{self.step}_seed{self.seed}"
