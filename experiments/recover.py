r"""Recovery study: how much post-hoc tuning brings back what caption curation left out.

    python -m experiments.recover --workdir=workdir/recover --pretrained_workdir=workdir/contrastive

Towers, per seed: ``p0``, a CLIP / SigLIP dual encoder trained on dashcam scenes whose captions
never mention the traffic light (p = 0); ``p1``, the same recipe with captions that always mention
it; ``init``, the random init both started from. p0 and p1 are trained here with the contrastive
study's streams, keys and checkpoint layout (``invariance.dashcam``) or loaded from a finished
contrastive-study workdir (``--pretrained_workdir``).

On the n axis (the first n scenes of one labelled pool per seed: nested label sets) the light is
predicted on ``--num_test`` held-out scenes by linear probes on frozen towers
(``recover_runs.PROBES``) and by trained methods (``recover_runs.TRAINED``: a tower, the layers
that stay frozen, a random or linear-probe head). A trained method uses exactly its n labels: the
last ``--val_fraction`` of them choose the learning rate and the stopping step, the others train.
Matched-step re-captioning continues contrastive training from each start on captions of which a
fraction f mention the light, and probes the light at each of ``--recaption_steps``.

The method, every recipe and the reading: docs/studies/recover.md (``recover_report.document``).
Rows: ``recover_rows.Recovery``; config: ``recover_config``; names and typed runs:
``recover_runs``.
"""
from __future__ import annotations

import time

from absl import logging

from experiments import cli
from experiments import config
from experiments import recover_report
from experiments import recover_runs as rr
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.recover_config import RecoverConfig
from experiments.recover_rows import Recovery


def plan(cfg: RecoverConfig) -> list:
  """The typed runs of a study, seed by seed (a seed's scenes and towers are made once)."""
  out, curves = [], rr.curves(cfg.methods, cfg.references)
  for seed in cfg.seeds:
    out += [rr.Pretrain(t, seed) for t in cfg.towers]
    out += [rr.Curve(c, n, seed) for n in cfg.n_labels for c in curves]
    out += [rr.Recaption(s, f, step, seed) for s in cfg.recaption_starts
            for f in cfg.recaption_fractions for step in (0,) + cfg.recaption_steps]
  return out


def describe(row: dict) -> str:
  return f"light {row['light_acc']:.3f} car {row['car_acc']:.3f}" if "light_acc" in row else (
      row["source"])


def main(cfg: RecoverConfig):
  start = time.perf_counter()
  workdir = workdir_lib.Workdir(cfg.workdir, "recover", config.identity(cfg), create=False)
  study = Recovery(cfg, workdir)
  if cfg.pretrained_workdir:       # read before this workdir is created: unreadable leaves no trace
    for seed in cfg.seeds:
      for tower in cfg.towers:
        study.params(seed, tower)
  workdir.create()
  runs = plan(cfg)
  compute = {rr.Pretrain: study.pretrain_row, rr.Curve: study.curve_row,
             rr.Recaption: study.recaption_row}
  fresh = sum(not workdir.has_row(r.key) for r in runs)
  logging.info("recover study: %d rows (%d to compute; curves %s, n %s, re-captioning %s x f %s "
               "x steps %s, seeds %s), towers: %s", len(runs), fresh,
               ",".join(rr.curves(cfg.methods, cfg.references)),
               list(cfg.n_labels), list(cfg.recaption_starts), list(cfg.recaption_fractions),
               list(cfg.recaption_steps), list(cfg.seeds),
               cfg.pretrained_workdir or "pretrained here")
  rows = runner.run_all(workdir, [runner.Run(r.key, lambda r=r: compute[type(r)](r), describe)
                                  for r in runs])
  by_type = {kind: [row for r, row in zip(runs, rows) if isinstance(r, kind)] for kind in compute}
  loss_runs = [(cfg.run_key(rr.TOWER_P[t]), s) for t in cfg.towers for s in cfg.seeds
               if not cfg.pretrained_workdir]
  loss_runs += [(rr.recaption_run(s, f), seed) for s in cfg.recaption_starts
                for f in cfg.recaption_fractions for seed in cfg.seeds]
  timing = {"wall_seconds": time.perf_counter() - start, "rows_computed": fresh,
            "rows": len(runs)}
  markdown = recover_report.publish(workdir, cfg, by_type[rr.Curve], by_type[rr.Pretrain],
                                    by_type[rr.Recaption], loss_runs, timing)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(RecoverConfig, main)
