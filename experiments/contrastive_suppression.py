r"""Is the light *suppressed* when captions stop mentioning it?

    python -m experiments.contrastive_suppression --flagfile=experiments/configs/contrastive_suppression.flags

A start tower that holds the light (``p1``: trained ``--start_steps`` on captions that always
mention it; or ``init``, the random tower, which holds it with 4 and 6 px lamps) is continued for
``--continue_steps`` on captions that never mention the light (p = 0) and, as its control, on
captions that always do (p = 1): same start, same image batches in the same order (one batch stream
per seed), same optimizer, same step count; the captions differ only by the light phrase.
Suppression is the p = 0 continuation ending below its p = 1 control (the pre-registered endpoint:
``contrastive_suppression_report``). The continuation's optimizer is a factor: AdamW with
decoupled weight decay (``--weight_decays``) and a learned or fixed temperature
(``invariance.contrastive_optim``). Every tower is measured by ``experiments.caption_towers`` (scenes
without red cars; ridge and MLP probes, the sensitivity's numerator and denominator, zero-shot).

Rows: ``StartRun.key`` (the start tower measured) and ``Continuation.key`` (a continuation, traced
at ``--probe_steps``). Results: ``--workdir``/results.json, results.md, light_continuation.png.
"""
from __future__ import annotations

from experiments import cli
from experiments import config
from experiments import contrastive_suppression_report as report_lib
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.contrastive_suppression_config import Continuation, StartRun, SuppressionConfig
from experiments.contrastive_suppression_rows import Study


def main(cfg: SuppressionConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive_suppression", config.identity(cfg))
  study, runs = Study(cfg, workdir), cfg.runs()
  rows = runner.run_all(workdir, [study.run(r) for r in runs])
  starts = [row for run, row in zip(runs, rows) if isinstance(run, StartRun)]
  continuations = [row for run, row in zip(runs, rows) if isinstance(run, Continuation)]
  markdown = report_lib.publish(workdir, cfg, continuations, starts)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(SuppressionConfig, main)
