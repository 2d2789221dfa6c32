"""The fair-SigLIP comparison's report: validation loss per learning rate, the chosen rate per loss,
and the losses compared at their chosen rates (``experiments.contrastive_losses``)."""
from __future__ import annotations

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib

ATTRS = ("light", "car_color", "pedestrian", "clouds")


def _mean(vals) -> float:
  return float(np.mean(vals)) if vals else float("nan")


def _pm(vals) -> str:
  if not vals:
    return "-"
  mean, _, ci = report.mean_sd_ci(vals)
  return f"{mean:.3f}" if len(vals) < 2 else f"{mean:.3f} ± {ci:.3f}"


def _of(rows, **want) -> list[dict]:
  return sorted((r for r in rows if all(r[k] == v for k, v in want.items())),
                key=lambda r: r["seed"])


def chosen_rates(rows) -> dict[str, float]:
  """Per loss: the learning rate of the lowest mean validation loss over seeds at p = 1."""
  out = {}
  for loss in sorted({r["loss"] for r in rows}):
    by_lr = {lr: _mean([r["validation_loss"] for r in _of(rows, loss=loss, lr=lr, p=1.0)])
             for lr in sorted({r["lr"] for r in rows if r["loss"] == loss})}
    out[loss] = min(by_lr, key=by_lr.get)
  return out


def comparison(rows, chosen) -> dict:
  """At the chosen rates: per p, CLIP minus SigLIP embedding light probe paired by seed."""
  if set(chosen) != {"clip", "siglip"}:
    return {}
  out = {}
  for p in sorted({r["p"] for r in rows}):
    a = {r["seed"]: r for r in _of(rows, loss="clip", lr=chosen["clip"], p=p)}
    b = {r["seed"]: r for r in _of(rows, loss="siglip", lr=chosen["siglip"], p=p)}
    diffs = [a[s]["probe"]["embedding"]["light"] - b[s]["probe"]["embedding"]["light"]
             for s in sorted(set(a) & set(b))]
    if diffs:
      out[f"{p:g}"] = report.paired_t(diffs)
  return out


def results_markdown(cfg, results) -> str:
  rows, chosen = results["rows"], results["chosen"]
  grid = []
  for loss in sorted({r["loss"] for r in rows}):
    for lr in sorted({r["lr"] for r in rows}):
      for p in sorted({r["p"] for r in rows}):
        got = _of(rows, loss=loss, lr=lr, p=p)
        if got:
          grid.append([loss, f"{lr:g}" + (" (chosen)" if chosen.get(loss) == lr else ""), f"{p:g}",
                       len(got), _pm([r["validation_loss"] for r in got])]
                      + [_pm([r["probe"]["embedding"][a] for r in got]) for a in ATTRS]
                      + [_pm([r["zero_shot"]["light"] for r in got if r["zero_shot"]["light"]
                              is not None]) if p > 0 else "not testable"])
  lines = [
      "# CLIP against a fair SigLIP (own learning rate, bias initialised for the batch)",
      f"Seeds {list(cfg.seeds)}; dim {cfg.embed_dim}, batch {cfg.batch_size}, {cfg.steps} steps "
      f"(Adam, warmup {cfg.warmup_steps}, cosine), lamp {cfg.lamp_size} px, no red cars; SigLIP "
      f"bias init '{cfg.siglip_bias_init}'. Learning rate per loss: lowest mean validation loss "
      f"({cfg.num_validation} held-out captioned scenes) at p = 1. Mean ± 95% t-interval.",
      "## Every run (embedding probes)",
      report.markdown_table(["loss", "lr", "p", "n", "validation loss"]
                            + [f"probe {a}" for a in ATTRS] + ["zero-shot light"], grid),
      "## CLIP minus SigLIP at the chosen rates (embedding light probe, paired by seed)"]
  comp = results["comparison"]
  lines.append(report.markdown_table(
      ["p", "n", "CLIP - SigLIP (95%)", "p-value"],
      [[p, d["n"], f"{d['mean']:+.3f} ± {d['ci']:.3f}" if d["n"] > 1 else f"{d['mean']:+.3f}",
        f"{d['p']:.3g}"] for p, d in comp.items()]) if comp else "Only one loss in this grid.")
  return "\n\n".join(lines) + "\n"


def publish(workdir: workdir_lib.Workdir, cfg, rows) -> str:
  chosen = chosen_rates(rows)
  results = {"study": "contrastive_losses", "rows": rows, "chosen": chosen,
             "comparison": comparison(rows, chosen)}
  markdown = results_markdown(cfg, results)
  workdir.publish(results, markdown, lambda w: None)
  return markdown
