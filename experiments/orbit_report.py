"""The orbit study's report: summary table, Jensen gap, generated reading, figures."""
from __future__ import annotations

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib

METRICS = ("acc_in_support", "acc_out_of_support", "invariance_error", "max_error_max",
           "flip_rate", "train_seconds", "num_params")


def _flat(row: dict) -> dict:
  inv = row.get("invariance", {})
  return {**row, "max_error_max": inv.get("max_error_max"), "flip_rate": inv.get("flip_rate")}


def jensen_summary(rows) -> dict:
  """Per model: examples checked, violations (impossible for a convex loss: a float sanity check)
  and the mean gap in nats."""
  by_model: dict[str, list] = {}
  for r in rows:
    if "jensen" in r:
      by_model.setdefault(r["model"], []).append(r["jensen"])
  return {m: {"examples": sum(c["examples"] for c in cs),
              "violations": sum(c["violations"] for c in cs),
              "mean_gap": float(np.mean([c["mean_gap"] for c in cs]))}
          for m, cs in by_model.items()}


def write(workdir: workdir_lib.Workdir, cfg, rows: list) -> dict:
  summary = report.summarize([_flat(r) for r in rows], ["model"], METRICS)
  results = {"study": "orbit", "flags": workdir.flags, "rows": rows, "summary": summary,
             "jensen": jensen_summary(rows)}

  def plots(w):
    plot(w, cfg, summary)
    report.plot_loss_curves(w, [(r["model"], r["seed"]) for r in rows])
  return workdir.publish(results, markdown(cfg, results), plots)


def markdown(cfg, results: dict) -> str:
  table = report.markdown_table(
      ["model", "params", "acc in support", "acc out of support", "gap (pts)",
       "batch invariance error", "per-example max error", "flip rate", "train s"],
      [[s["model"], f"{s['num_params_mean']:.0f}", report.pm(s, "acc_in_support"),
        report.pm(s, "acc_out_of_support"),
        f"{100 * (s['acc_in_support_mean'] - s['acc_out_of_support_mean']):.1f}",
        report.pm(s, "invariance_error", "{:.2e}"), report.pm(s, "max_error_max", "{:.2e}"),
        report.pm(s, "flip_rate"), f"{s['train_seconds_mean']:.1f}"]
       for s in results["summary"]])
  jensen = report.markdown_table(
      ["model", "examples", "violations (sanity check)", "mean gap (nats)"],
      [[m, j["examples"], j["violations"], f"{j['mean_gap']:.4f}"]
       for m, j in results["jensen"].items()])
  where = (f"trained in the `{cfg.support}` support, tested in and out of it"
           if cfg.group == "translations" else "trained upright, tested upright and rotated")
  widths = [r["learned_width"] for r in results["rows"] if "learned_width" in r]
  width_line = ""
  if widths:
    width_line = (f"\n\n`learned_aug` learned shift ranges of ±{np.mean([w['dy'] for w in widths]):.1f}"
                  f" px (rows) and ±{np.mean([w['dx'] for w in widths]):.1f} px (columns), mean over "
                  "seeds.")
  return (f"# Orbit study ({cfg.group}; {where}; seeds {list(cfg.seeds)})\n\n"
          "Mean ± 95% t-interval over seeds. Batch invariance error: worst relative change of the "
          "logits of the whole batch over the audited elements; per-example max error: the worst "
          "example's worst element; flip rate: share of (example, element) pairs whose prediction "
          f"differs from the identity's.\n\n{table}\n\n"
          "Jensen gap (full orbit, MLP-based models): cross-entropy is convex, so the orbit "
          "model's loss can never exceed the mean loss over the transformed copies; violations "
          f"are a float sanity check, the gap is how much feature averaging lowers the loss.\n\n"
          f"{jensen}{width_line}\n\n" + reading(results["summary"]) + "\n")


def reading(summary) -> str:
  """A one-paragraph reading generated from the numbers (no claim is hard-coded)."""
  by = {s["model"]: s for s in summary}
  gap = lambda m: 100 * (by[m]["acc_in_support_mean"] - by[m]["acc_out_of_support_mean"])
  parts = []
  for m in ("cnn_gap", "p4", "orbit_full"):
    if m in by:
      parts.append(f"`{m}` loses {gap(m):.1f} points out of support with per-example invariance "
                   f"error {by[m]['max_error_max_mean']:.1e}")
  for m in ("mlp", "cnn_flat", "mlp_aug_support"):
    if m in by:
      parts.append(f"`{m}` loses {gap(m):.1f} points")
  if "mlp_aug_full" in by:
    parts.append(f"full-group augmentation (`mlp_aug_full`) loses {gap('mlp_aug_full'):.1f} points "
                 f"with flip rate {by['mlp_aug_full']['flip_rate_mean']:.3f}")
  return "Reading (generated from the numbers above): " + "; ".join(parts) + "."


def plot(workdir: workdir_lib.Workdir, cfg, summary) -> None:
  plt = report.pyplot()
  names = [s["model"] for s in summary]
  xs = np.arange(len(names))
  err = lambda s, m: 0.0 if not np.isfinite(s.get(m + "_ci95", np.nan)) else s[m + "_ci95"]
  fig, ax = plt.subplots(figsize=(9, 3.5))
  for off, metric, label in ((-0.2, "acc_in_support", "in support"),
                             (0.2, "acc_out_of_support", "out of support")):
    ax.bar(xs + off, [s[metric + "_mean"] for s in summary], 0.4,
           yerr=[err(s, metric) for s in summary], label=label)
  ax.set_xticks(xs, names, rotation=30, ha="right")
  ax.set_ylabel("test accuracy")
  ax.set_ylim(0, 1)
  ax.legend()
  ax.set_title(f"Orbit study ({cfg.group}): accuracy in vs out of the training support")
  workdir_lib.save_figure(fig, workdir.file("accuracy.png"))
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(9, 3.5))
  ax.bar(xs, [max(s["max_error_max_mean"], 1e-9) for s in summary])
  ax.set_yscale("log")
  ax.set_xticks(xs, names, rotation=30, ha="right")
  ax.set_ylabel("per-example invariance error (worst)")
  ax.set_title(f"Orbit study ({cfg.group}): invariance error per model")
  workdir_lib.save_figure(fig, workdir.file("invariance_error.png"))
  plt.close(fig)
