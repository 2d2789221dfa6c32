"""The contrastive study's report: summaries over seeds, tables, goal checks, figures.

``publish(workdir, cfg, rows, pixel_rows)`` writes results.json, results.md (tables and the goal
checks, generated from the numbers), probe_vs_p.png and loss_curves.png, and returns the markdown.
"""
from __future__ import annotations

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance.data import scenes

GROUP = ("loss", "mention_prob", "embed_dim")


def _metric_names(flat_rows: list[dict], skip=()) -> list[str]:
  return [k for k, v in flat_rows[0].items()
          if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)]


def summarize(rows: list[dict], pixel_rows: list[dict]) -> tuple[list, list]:
  flat = [report.flatten(r, sep="/") for r in rows]
  # final_loss is None for a run resumed from its final checkpoint: kept in the rows only.
  skip = set(GROUP) | {"seed", "steps", "resumed_from", "final_loss"}
  summary = report.summarize(flat, list(GROUP), _metric_names(flat, skip))
  flat_pix = [report.flatten(r, sep="/") for r in pixel_rows]
  pixels = report.summarize(flat_pix, ["features"], _metric_names(flat_pix, {"seed"}))
  return summary, pixels


def goal_checks(cfg, summary: list, pixels: list) -> list[str]:
  """The issue's goals, checked against the measured means (nothing here is hard-coded)."""
  attr, lines = cfg.attribute, []
  chance = 1.0 / len(scenes.ATTRIBUTES[attr])
  small = min(cfg.embed_dims)
  mark = lambda ok: "holds" if ok else "does NOT hold"
  for loss in cfg.losses:
    by_p = {s["mention_prob"]: s for s in summary if s["loss"] == loss and s["embed_dim"] == small}
    if 0.0 in by_p:
      s = by_p[0.0]
      light, car = s[f"probe_acc/{attr}_mean"], s["probe_acc/car_color_mean"]
      lines.append(f"- {loss}, dim {small}, p = 0: {attr} probe {light:.3f} <= chance + 0.05 "
                   f"= {chance + 0.05:.2f}: {mark(light <= chance + 0.05)}; car colour probe "
                   f"{car:.3f} >= 0.95: {mark(car >= 0.95)}.")
      conv = s[f"probe_acc_conv/{attr}_mean"]
      lines.append(f"- {loss}, dim {small}, p = 0: {attr} from the trained tower's first conv "
                   f"layer {conv:.3f} >= 0.95: {mark(conv >= 0.95)}.")
    if 1.0 in by_p:
      full = by_p[1.0][f"probe_acc/{attr}_mean"]
      lines.append(f"- {loss}, dim {small}, p = 1: {attr} probe {full:.3f} >= 0.95: "
                   f"{mark(full >= 0.95)}.")
    ps = sorted(by_p)
    means = [by_p[p][f"probe_acc/{attr}_mean"] for p in ps]
    drops = [(ps[i], ps[i + 1]) for i in range(len(ps) - 1) if means[i + 1] < means[i] - 0.01]
    lines.append(f"- {loss}, dim {small}: {attr} probe non-decreasing in p (1-point tolerance): "
                 f"{mark(not drops)}" + (f" (drops between p = {drops})." if drops else "."))
  if pixels:
    lines.append(f"- raw pixels: {attr} probe {pixels[0][f'probe_acc/{attr}_mean']:.3f} "
                 f"(the information is in the input).")
  return lines


def results_markdown(cfg, results: dict) -> str:
  attrs, pm = dashcam.ATTRIBUTES, report.pm
  s_sorted = sorted(results["summary"], key=lambda s: tuple(s[k] for k in GROUP))
  probe_table = report.markdown_table(
      ["loss", "p", "dim", "n"] + [f"probe {a}" for a in attrs] + ["zero-shot car", "train s"],
      [[s["loss"], f"{s['mention_prob']:g}", s["embed_dim"], s["n"]]
       + [pm(s, f"probe_acc/{a}") for a in attrs]
       + [pm(s, "zero_shot_acc"), f"{s['train_seconds_mean']:.0f}"] for s in s_sorted])
  a = cfg.attribute
  control_table = report.markdown_table(
      ["loss", "p", "dim", f"{a}: embedding", "penultimate", "pooled conv", "first conv (4x4)",
       "random-init embedding", "random-init first conv", f"cos({a} flip)", "cos(car flip)",
       "cos(unrelated)"],
      [[s["loss"], f"{s['mention_prob']:g}", s["embed_dim"], pm(s, f"probe_acc/{a}"),
        pm(s, f"probe_acc_penultimate/{a}"), pm(s, f"probe_acc_pooled/{a}"),
        pm(s, f"probe_acc_conv/{a}"), pm(s, f"random_init_probe_acc/{a}"),
        pm(s, f"random_init_probe_acc_conv/{a}"), pm(s, f"embedding_invariance/{a}", "{:.4f}"),
        pm(s, "embedding_invariance/car_color", "{:.4f}"), pm(s, "unpaired_similarity")]
       for s in s_sorted])
  pix = results["pixel_summary"]
  pixel_line = ("Raw-pixel probes (once per seed): " + ", ".join(
      f"{x} {pm(pix[0], f'probe_acc/{x}')}" for x in attrs) + ".") if pix else ""
  mentions: dict = {}
  for r in sorted(results["rows"], key=lambda r: r["seed"]):
    mentions.setdefault(r["mention_prob"], {})[r["seed"]] = r["mentions"]
  mention_line = (f"Training captions that mention the {a} (of {cfg.num_train}; per seed "
                  f"{'/'.join(map(str, cfg.seeds))}): " + ", ".join(
                      f"p = {p:g}: {'/'.join(str(m) for m in by_seed.values())}"
                      for p, by_seed in sorted(mentions.items())) + ".")
  return (f"# Contrastive study: captions mention the {a} with probability p\n\n"
          f"Seeds {list(cfg.seeds)}; {cfg.steps} steps, batch {cfg.batch_size}, "
          f"{cfg.num_train} training scenes; probes: logistic regression on {cfg.num_probe} "
          f"held-out scenes, tested on {cfg.num_probe} more. Chance: car colour 0.25, every other "
          f"attribute 0.50. Mean ± 95% interval over seeds (the mean alone for one seed).\n\n"
          f"## Linear probes on the final image embedding\n\n{probe_table}\n\n"
          f"## Where the {a} is lost (probes for the {a}) and embedding invariance\n\n"
          f"{control_table}\n\n{pixel_line}\n\n{mention_line}\n\n"
          "## Goals (checked from the numbers above)\n\n"
          + "\n".join(goal_checks(cfg, results["summary"], pix)) + "\n\n"
          "Training curves of every run: loss_curves.png.\n")



def plot(workdir: workdir_lib.Workdir, cfg, summary: list, pixels: list) -> None:
  plt = report.pyplot()
  fig, axes = plt.subplots(1, len(dashcam.ATTRIBUTES), figsize=(4 * len(dashcam.ATTRIBUTES), 3.4),
                           sharey=True)
  positive = [p for p in cfg.mention_probs if p > 0]
  linthresh = min(positive) if positive else 1e-3
  for ax, attr in zip(axes, dashcam.ATTRIBUTES):
    for loss in cfg.losses:
      for dim in cfg.embed_dims:
        ss = sorted((s for s in summary if s["loss"] == loss and s["embed_dim"] == dim),
                    key=lambda s: s["mention_prob"])
        ps = [s["mention_prob"] for s in ss]
        for field, style, label in (("probe_acc", "-o", "embedding"),
                                    ("probe_acc_conv", "--", "first conv")):
          ax.errorbar(ps, [s[f"{field}/{attr}_mean"] for s in ss],
                      yerr=[np.nan_to_num(s.get(f"{field}/{attr}_ci95", 0.0)) for s in ss],
                      fmt=style, capsize=2,
                      label=f"{loss} d={dim} {label}")
    ax.axhline(1.0 / len(scenes.ATTRIBUTES[attr]), color="grey", ls=":", label="chance")
    if pixels:
      ax.axhline(pixels[0][f"probe_acc/{attr}_mean"], color="grey", ls="-.", label="raw pixels")
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlabel(f"p (captions mention the {cfg.attribute})")
    ax.set_title(attr)
    ax.set_ylim(0, 1.02)
  axes[0].set_ylabel("held-out linear probe accuracy (± 95% interval)")
  axes[-1].legend(fontsize=7, loc="lower right")
  fig.suptitle("What the image embedding keeps, vs how often captions mention the "
               f"{cfg.attribute}")
  workdir_lib.save_figure(fig, workdir.file("probe_vs_p.png"))
  plt.close(fig)


def runs(cfg) -> list[tuple[str, int]]:
  """Every (run, seed) that trained, for the loss curves."""
  return [(dashcam.run_key(loss, p, dim), seed) for loss in cfg.losses for dim in cfg.embed_dims
          for p in cfg.mention_probs for seed in cfg.seeds]


def publish(workdir: workdir_lib.Workdir, cfg, rows: list, pixel_rows: list) -> str:
  summary, pixels = summarize(rows, pixel_rows)
  results = {"study": "contrastive", "flags": workdir.flags, "rows": rows, "summary": summary,
             "pixel_rows": pixel_rows, "pixel_summary": pixels}
  markdown = results_markdown(cfg, results)

  def figures(w: workdir_lib.Workdir) -> None:
    plot(w, cfg, summary, pixels)
    report.plot_loss_curves(w, runs(cfg))

  workdir.publish(results, markdown, figures)
  return markdown
