r"""Caption-curation study: what does a CLIP / SigLIP image embedding keep of a dashcam scene, and
is what it lacks *suppressed* (present, then removed) or *never learned*?

    python -m experiments.contrastive --flagfile=experiments/configs/contrastive.flags

Dual encoders (``invariance.dual_encoder``) are trained on procedural dashcam scenes whose captions
follow a policy (``--policies``): ``mention`` names the car and mentions ``--attribute`` (the
traffic light) with probability p; ``swap`` names the light and mentions the car with probability
p (is a salient attribute that captions never name kept?). The grid is loss x dim x policy x lamp
size x duplicate-caption scoring x training length x p, times seeds (``contrastive_runs.grid``);
``experiments.contrastive_rows`` makes each row.

Every run row measures, on held-out scenes, for every layer of the image tower (each conv block on
an 8x8 grid and globally pooled, the penultimate layer, the embedding; ``invariance.evaluate.
layer_report``): a ridge probe per attribute with leave-one-out-chosen regularisation, and the
counterfactual sensitivity (distance to the one-attribute flip / distance to an unrelated scene).
The same measurements of the same tower at its initialisation are an ``init`` row (per dim, lamp
size and seed): selectivity = trained - init. Runs whose p is in ``--trace_probs`` are also measured
at ``--probe_steps`` through training (one row per step; training resumes between them), so a rise
then fall (suppression) can be told from never rising. Rows also hold the zero-shot accuracy of the
car colour and of the light from prompts that are not training captions (``dashcam.ZERO_SHOT``),
and ``exposures``: how many captions mentioning the varied attribute the run's batches held
(``pipeline.visits``), the dose of the dose-response. Raw-pixel probes run once per seed and lamp.

Data streams and keys: ``invariance.dashcam``. Results go to ``--workdir``: results.json,
results.md and figures (``experiments.contrastive_report``).
"""
from __future__ import annotations

import functools

import numpy as np

from experiments import cli
from experiments import config
from experiments import contrastive_report
from experiments import contrastive_runs
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.contrastive_config import ContrastiveConfig
from experiments.contrastive_rows import Study
from invariance import dashcam


def _describe(row: dict) -> str:
  probe = row["probe"]["embedding"]
  return (f"embedding probe light {probe[dashcam.LIGHT]:.3f}, car {probe['car_color']:.3f}; "
          f"zero-shot light {np.mean(list(row['zero_shot'][dashcam.LIGHT].values())):.3f}; "
          f"{row['exposures']} exposures")


def work(cfg: ContrastiveConfig, study: Study) -> list[tuple[str, runner.Run]]:
  """Every row to compute, as (kind, ``runner.Run``) in training order: per seed and lamp size,
  the raw-pixel row, the init row of each embedding dim, then the trained runs."""
  out, runs = [], contrastive_runs.grid(cfg)
  for seed in cfg.seeds:
    for lamp in cfg.lamp_sizes:
      data = dashcam.SeedData(seed, cfg.data_dir, lamp)
      mine = [r for r in runs if r.seed == seed and r.lamp_size == lamp]
      out.append(("pixels", runner.Run(contrastive_runs.pixels_key(lamp, seed),
                                       functools.partial(study.pixel_row, data))))
      inits = {}
      for run in mine:
        if run.dim not in inits:
          inits[run.dim] = runner.Run(run.init_key,
                                      functools.partial(study.init_row, run.loss, run.dim, data))
          out.append(("init", inits[run.dim]))
        init = inits[run.dim]
        out.append(("run", runner.Run(
            run.key, functools.partial(study.run_row, run, data,
                                       functools.partial(study.workdir.row, init.key,
                                                         init.compute)), _describe)))
  return out


def main(cfg: ContrastiveConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive", config.identity(cfg))
  todo = work(cfg, Study(cfg, workdir))
  rows = runner.run_all(workdir, [run for _, run in todo])
  kinds = {kind: [row for (k, _), row in zip(todo, rows) if k == kind]
           for kind in ("run", "init", "pixels")}
  markdown = contrastive_report.publish(workdir, cfg, kinds["run"], kinds["init"],
                                        kinds["pixels"])
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(ContrastiveConfig, main)
