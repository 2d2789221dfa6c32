"""The orbit study's report: tables, Jensen gap, learned ranges, generated reading, figures."""
from __future__ import annotations

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib
from experiments.orbit_config import ORBIT_EVAL_SUFFIX

METRICS = ("acc_in_support", "acc_out_of_support", "val_acc", "best_step", "steps_run",
           "invariance_error", "max_error_max", "flip_rate", "flip_rate_inside",
           "flip_rate_outside", "train_seconds", "num_params")


def _flat(row: dict) -> dict:
  inv = row.get("invariance", {})
  return {**row, "max_error_max": inv.get("max_error_max"), "flip_rate": inv.get("flip_rate"),
          "flip_rate_inside": inv.get("inside_support", {}).get("flip_rate"),
          "flip_rate_outside": inv.get("outside_support", {}).get("flip_rate")}


def derived_rows(rows: list) -> list:
  """The test-time orbit averaging of ``mlp_aug_full``'s parameters as rows of their own."""
  return [{**r, **r["orbit_eval"], "model": r["model"] + ORBIT_EVAL_SUFFIX, "invariance": {},
           "invariance_error": None, "jensen": None}
          for r in rows if "orbit_eval" in r]


def jensen_summary(rows) -> dict:
  """Per model: examples checked, violations (impossible for a convex loss: a float sanity check)
  and the mean gap in nats."""
  by_model: dict[str, list] = {}
  for r in rows:
    if r.get("jensen"):
      by_model.setdefault(r["model"], []).append(r["jensen"])
  return {m: {"examples": sum(c["examples"] for c in cs),
              "violations": sum(c["violations"] for c in cs),
              "mean_gap": float(np.mean([c["mean_gap"] for c in cs]))}
          for m, cs in by_model.items()}


def mean_maps(rows: list) -> dict:
  """Placement maps averaged over seeds, per model (square grids)."""
  maps: dict[str, list] = {}
  for r in rows:
    if r.get("placement_map"):
      maps.setdefault(r["model"], []).append(r["placement_map"])
  out = {}
  for m, ms in maps.items():
    a = np.mean(np.asarray(ms), 0)
    side = int(round(np.sqrt(a.size)))
    out[m] = a.reshape(side, side).tolist()
  return out


def write(workdir: workdir_lib.Workdir, cfg, rows: list) -> dict:
  all_rows = rows + derived_rows(rows)
  summary = report.summarize([_flat(r) for r in all_rows], ["model"], METRICS)
  results = {"study": "orbit", "flags": workdir.flags, "rows": rows, "summary": summary,
             "jensen": jensen_summary(rows), "maps": mean_maps(all_rows)}

  def plots(w):
    plot(w, cfg, summary)
    if results["maps"]:
      plot_maps(w, cfg, results["maps"])
    report.plot_loss_curves(w, [(r["model"], r["seed"]) for r in rows])
  return workdir.publish(results, markdown(cfg, results), plots)


def _fmt_steps(s) -> str:
  return f"{s['best_step_mean']:.0f} / {s['steps_run_mean']:.0f}" if "best_step_mean" in s else "-"


def markdown(cfg, results: dict) -> str:
  summary = results["summary"]
  table = report.markdown_table(
      ["model", "params", "acc in support", "acc out of support", "gap (pts)", "val acc",
       "best / run steps", "train s"],
      [[s["model"], f"{s['num_params_mean']:.0f}", report.pm(s, "acc_in_support"),
        report.pm(s, "acc_out_of_support"),
        f"{100 * (s['acc_in_support_mean'] - s['acc_out_of_support_mean']):.1f}",
        report.pm(s, "val_acc"), _fmt_steps(s), f"{s['train_seconds_mean']:.1f}"]
       for s in summary])
  audit_table = report.markdown_table(
      ["model", "per-example max error", "flip rate", "flip rate, shifts inside support",
       "flip rate, other shifts", "batch error (earlier editions)"],
      [[s["model"], report.pm(s, "max_error_max", "{:.2e}"), report.pm(s, "flip_rate"),
        report.pm(s, "flip_rate_inside"), report.pm(s, "flip_rate_outside"),
        report.pm(s, "invariance_error", "{:.2e}")]
       for s in summary if "max_error_max_mean" in s])
  jensen = report.markdown_table(
      ["model", "examples", "violations (sanity check)", "mean gap (nats)"],
      [[m, j["examples"], j["violations"], f"{j['mean_gap']:.4f}"]
       for m, j in results["jensen"].items()])
  where = (f"trained in the `{cfg.support}` support, tested in and out of it"
           if cfg.group == "translations" else "trained upright, tested upright and rotated by "
           "k x 90 degrees, k = 1..3")
  widths = {}
  for r in results["rows"]:
    if "learned_width" in r:
      widths.setdefault(r["model"], []).append(r)
  width_table = ""
  if widths:
    width_table = "\n\nLearned shift ranges (± px, mean over seeds):\n\n" + report.markdown_table(
        ["run", "rows (dy)", "columns (dx)", "acc in", "acc out"],
        [[m, f"{np.mean([r['learned_width']['dy'] for r in rs]):.2f}",
          f"{np.mean([r['learned_width']['dx'] for r in rs]):.2f}",
          f"{np.mean([r['acc_in_support'] for r in rs]):.3f}",
          f"{np.mean([r['acc_out_of_support'] for r in rs]):.3f}"] for m, rs in widths.items()])
  return (f"# Orbit study ({cfg.group}; {where}; seeds {list(cfg.seeds)})\n\n"
          "Mean ± 95% t-interval over seeds. Every arm: Adam, linear warmup then cosine decay to "
          f"the step cap ({cfg.steps}); validation accuracy every {cfg.eval_every} steps on held-out "
          f"training digits; best parameters kept; stopped after {cfg.patience} evaluations "
          f"without a {100 * cfg.min_delta:g}-point improvement.\n\n{table}\n\n"
          "Invariance audit over "
          + ("every group element" if cfg.eval_elements == 0 else
             f"the identity and {cfg.eval_elements} random elements")
          + f" on {cfg.eval_examples} in-support test digits: per-example max error = the worst "
          "example's worst relative change of its logits; flip rate = share of (example, element) "
          "pairs whose prediction differs from the identity's, also split into shifts that keep "
          f"the digit in the training support and the rest.\n\n{audit_table}\n\n"
          "Jensen gap (full orbit, MLP-based models): cross-entropy is convex, so the orbit "
          "model's loss can never exceed the mean loss over the transformed copies; 0 violations "
          "is a float sanity check, not a finding. The gap is how much averaging the features "
          f"over the orbit lowers the loss.\n\n{jensen}{width_table}\n\n"
          + reading(summary) + "\n")


def reading(summary) -> str:
  """A reading generated from the numbers (no claim is hard-coded)."""
  by = {s["model"]: s for s in summary}
  gap = lambda m: 100 * (by[m]["acc_in_support_mean"] - by[m]["acc_out_of_support_mean"])
  parts = []
  for m in ("cnn_gap", "cnn_aps", "p4", "orbit_full"):
    if m in by and "max_error_max_mean" in by[m]:
      parts.append(f"`{m}` {by[m]['acc_in_support_mean']:.3f} in support, loses {gap(m):.1f} "
                   f"points out of it, per-example error {by[m]['max_error_max_mean']:.1e}, flip "
                   f"rate {by[m]['flip_rate_mean']:.3f}")
  for m in ("mlp", "cnn_flat", "cnn_strided", "mlp_aug_support", "mlp_aug_full",
            "mlp_aug_full_orbit_eval"):
    if m in by:
      parts.append(f"`{m}` {by[m]['acc_in_support_mean']:.3f} in, "
                   f"{by[m]['acc_out_of_support_mean']:.3f} out")
  return "Reading (generated from the numbers above): " + "; ".join(parts) + "."


def plot(workdir: workdir_lib.Workdir, cfg, summary) -> None:
  plt = report.pyplot()
  names = [s["model"] for s in summary]
  xs = np.arange(len(names))
  err = lambda s, m: 0.0 if not np.isfinite(s.get(m + "_ci95", np.nan)) else s[m + "_ci95"]
  fig, ax = plt.subplots(figsize=(10, 3.5))
  for off, metric, label in ((-0.2, "acc_in_support", "in support"),
                             (0.2, "acc_out_of_support", "out of support")):
    ax.bar(xs + off, [s[metric + "_mean"] for s in summary], 0.4,
           yerr=[err(s, metric) for s in summary], label=label)
  ax.set_xticks(xs, names, rotation=30, ha="right")
  ax.set_ylabel("test accuracy (mean, 95% CI)")
  ax.set_ylim(0, 1)
  ax.legend()
  ax.set_title(f"Orbit study ({cfg.group}): accuracy in vs out of the training support")
  workdir_lib.save_figure(fig, workdir.file("accuracy.png"))
  plt.close(fig)
  audited = [s for s in summary if "max_error_max_mean" in s]
  fig, ax = plt.subplots(figsize=(10, 3.5))
  ax.bar(np.arange(len(audited)), [max(s["max_error_max_mean"], 1e-9) for s in audited])
  ax.set_yscale("log")
  ax.set_xticks(np.arange(len(audited)), [s["model"] for s in audited], rotation=30, ha="right")
  ax.set_ylabel("per-example invariance error (worst)")
  ax.set_title(f"Orbit study ({cfg.group}): invariance error per model")
  workdir_lib.save_figure(fig, workdir.file("invariance_error.png"))
  plt.close(fig)


def plot_maps(workdir: workdir_lib.Workdir, cfg, maps: dict) -> None:
  """Accuracy at every placement, a heatmap per model, the training support outlined."""
  plt = report.pyplot()
  from matplotlib import patches
  names = list(maps)
  cols = min(4, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
  side = len(next(iter(maps.values())))
  half = cfg.canvas // 2
  glyph = cfg.canvas - side + 1
  support_rows = {"bottom": (cfg.canvas - half, side), "top": (0, half - glyph + 1)}
  for ax, name in zip(axes.flat, names):
    im = ax.imshow(np.asarray(maps[name]), vmin=0, vmax=1, cmap="viridis")
    r0, r1 = support_rows.get(cfg.support, (0, side))
    c0, c1 = {"left": (0, half - glyph + 1), "right": (cfg.canvas - half, side)}.get(
        cfg.support, (0, side))
    ax.add_patch(patches.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False,
                                   edgecolor="red", lw=1.5))
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.colorbar(im, ax=axes, shrink=0.6, label="accuracy (mean over seeds)")
  fig.suptitle("Accuracy at every placement of the test digit (top-left position); red: training "
               "support", fontsize=10)
  workdir_lib.save_figure(fig, workdir.file("placement_maps.png"))
  plt.close(fig)
