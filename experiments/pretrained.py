r"""Pretrained-model study: what a real CLIP / SigLIP tower keeps of an object nobody captions.

    python -m experiments.pretrained --flagfile=experiments/configs/pretrained.flags \
        --checkpoints=ViT-B-32-quickgelu=/weights/openai_vit_b_32.safetensors

Towers: every ``--checkpoints`` entry, each preceded by its architecture at random init (the lower
reference), and raw pixels (downsampled to 32x32). Data: the lab's dashcam scenes (offline
default; the attribute's box is known) or any TFDS dataset (image classification, or detection
with one example per labelled box). Views: the whole frame, crops of ``--contexts`` times the box,
each also in greyscale.

Per (tower, view) row: label curves (``--label_sizes`` labels, one draw per seed, ridge probes
whose regularisation is chosen by leave-one-out CV inside the drawn labels) at every block's class
token (CLIP), mean patch token and the patch covering the object, on the pre-projection feature and
on the embedding; zero-shot accuracy of the prompt ensemble (``--templates`` x class names) when a
tokenizer is given; the whole-frame view also per object-size stratum. Per tower: how well the text
tower separates the class prompts, the invariance audit of a probe classifier on the pre-projection
feature, on the colour view where that probe is most accurate (translations by whole and
fractional patches, cyclic and non-wrapping; 90-degree rotations), a placement map (the object
pasted at every grid position of a grey canvas, probe trained at the centre) and, with
``--recovery``, post-hoc tuning (``experiments.pretrained_tuning``).
config -> data and towers (``pretrained_rows.Study``) -> runs -> ``runner.run_all`` -> report.
Rows are resumable; results.json, results.md and figures come from ``pretrained_report``.
"""
from __future__ import annotations

from absl import logging
import numpy as np

from experiments import cli
from experiments import config
from experiments import pretrained_report
from experiments import pretrained_tuning
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.pretrained_config import PretrainedConfig
from experiments.pretrained_rows import PIXELS, Study, audit_view


def _embedding_probe(row: dict) -> str:
  curve = row["curves"]["embedding" if row["tower"] != PIXELS else PIXELS]
  return f"probe with all labels {np.mean(curve[max(curve, key=int)]):.3f}"


def feature_runs(cfg: PretrainedConfig, study: Study) -> list[runner.Run]:
  """Raw pixels per view, then every (tower, view): label curves, zero-shot, strata."""
  views = [v for v, _, _ in cfg.views]
  runs = [runner.Run(f"{PIXELS}__{v}", lambda v=v: study.pixels_row(v), _embedding_probe)
          for v in views]
  return runs + [runner.Run(f"{name}__{v}", lambda n=name, v=v: study.tower_row(n, v),
                            _embedding_probe) for name in study.towers for v in views]


def tower_runs(cfg: PretrainedConfig, study: Study, workdir, tower_rows: list[dict]
               ) -> list[tuple[str, runner.Run]]:
  """Per tower, after its feature rows: the audit (on the view its probe reads best), the
  placement map and each post-hoc tuning method; each run tagged with its row kind."""
  runs = []
  for name in study.towers:
    if cfg.audit_examples:
      view = audit_view([r for r in tower_rows if r["tower"] == name])
      runs.append(("audit", runner.Run(f"{name}__audit",
                                       lambda n=name, v=view: study.audit_row(n, v))))
    if cfg.placement_grid and cfg.has_boxes:
      runs.append(("placement", runner.Run(f"{name}__placement",
                                           lambda n=name: study.placement_row(n))))
    runs += [("recovery", runner.Run(f"{name}__{method}", lambda n=name, m=method:
                                     pretrained_tuning.row(study, workdir, n, m)))
             for method in cfg.recovery]
  return runs


def main(cfg: PretrainedConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "pretrained", config.identity(cfg), create=False)
  study = Study(cfg)             # data, weights and tokenizers checked before the workdir exists
  for name in study.towers:
    study.tokenizer(study.params(name)[0].config)
  workdir.create()
  if all(c.path is None for c in study.towers.values()):
    logging.warning("pretrained: every tower is at random init: these are NOT pretrained results")
  features = runner.run_all(workdir, feature_runs(cfg, study))
  rows = {"pixels": [r for r in features if r["tower"] == PIXELS],
          "towers": [r for r in features if r["tower"] != PIXELS],
          "audit": [], "placement": [], "recovery": []}
  tagged = tower_runs(cfg, study, workdir, rows["towers"])
  for (kind, _), row in zip(tagged, runner.run_all(workdir, [run for _, run in tagged])):
    rows[kind].append(row)
  pretrained_report.publish(workdir, cfg, study, rows)
  print(workdir.file("results.md"))


if __name__ == "__main__":
  cli.run(PretrainedConfig, main)
