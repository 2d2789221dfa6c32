"""The recovery study's report: summaries over seeds, tables, the generated reading, figures.

``publish(workdir, cfg, rows, pretrain, recaption_runs, trained)`` writes results.json,
results.md, labels_to_recover.png and loss_curves.png (the ``trained`` (run, seed) pairs), and
returns the markdown. A row's curve is its method, or ``recaption f=<fraction>``.
"""
from __future__ import annotations

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib
from invariance import dashcam

LIGHT = dashcam.LIGHT


def curve(row: dict) -> str:
  """The name of a row's curve: the method, or ``recaption f=<fraction>``."""
  if row["method"] == "recaption":
    return f"recaption f={row['recaption_fraction']:g}"
  return row["method"]


def curve_order(cfg) -> list[str]:
  names = []
  for m in cfg.methods:
    if m == "recaption":
      names += [curve({"method": m, "recaption_fraction": f}) for f in cfg.fractions]
    else:
      names.append(m)
  return names


def summarize(rows: list[dict]) -> list[dict]:
  return report.summarize([dict(r, curve=curve(r)) for r in rows], ["curve", "n_labels"],
                          ["light_acc", "car_acc", "train_seconds"])


def smallest_n(cfg, summary: list[dict]) -> dict:
  """Per curve, the smallest n whose mean light accuracy reaches the target (None: never)."""
  out = {}
  for name in curve_order(cfg):
    ok = sorted(s["n_labels"] for s in summary
                if s["curve"] == name and s["light_acc_mean"] >= cfg.target_acc)
    out[name] = ok[0] if ok else None
  return out


def _fmt_n(n) -> str:
  return "not reached" if n is None else str(n)


def reading(cfg, results: dict) -> list[str]:
  """A reading generated from the numbers (no claim is hard-coded)."""
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves, top, target = curve_order(cfg), max(cfg.n_labels), cfg.target_acc
  light = lambda c, n: by[(c, n)]["light_acc_mean"]
  lines = []
  if "probe" in curves and "probe_penultimate" in curves:
    emb, pen = light("probe", top), light("probe_penultimate", top)
    if pen >= target:
      where = "still linearly there before the projection: the projection squeezed it out"
    elif pen >= emb + 0.05:
      where = (f"partly there before the projection (below the {target:.0%} target), and further "
               "lost in it")
    else:
      where = "already gone before the projection (the tower itself dropped it)"
    lines.append(f"- The p = 0 model: with all {top} labels a light probe reads {emb:.3f} from the "
                 f"embedding and {pen:.3f} from the penultimate layer (chance 0.50): the light is "
                 f"{where}.")
  reached = []
  for c, n in results["smallest_n"].items():
    if n is None:
      continue
    later = [m for m in cfg.n_labels if m > n and light(c, m) < target]
    note = ""
    if later:
      runs = [r for r in results["rows"] if curve(r) == c and r["n_labels"] in later]
      stuck = sum(r["light_acc"] < 0.6 for r in runs)
      note = (f" (but below it again at n = {later}, where {stuck} of {len(runs)} runs stayed "
              "near chance, < 0.60)")
    reached.append(f"`{c}` at n = {n}{note}")
  never = [f"`{c}`" for c, n in results["smallest_n"].items() if n is None]
  lines.append(f"- {target:.0%} light accuracy: " + (", ".join(reached) if reached else "no method")
               + (f"; never within n <= {top}: " + ", ".join(never) if never else "") + ".")
  if "finetune" in curves and "scratch" in curves:
    diffs = {n: light("finetune", n) - light("scratch", n) for n in cfg.n_labels}
    ahead = [n for n, d in diffs.items() if d > 0.02]
    behind = [n for n, d in diffs.items() if d < -0.02]
    tie = [n for n, d in diffs.items() if abs(d) <= 0.02]
    parts = []
    if ahead:
      parts.append(f"ahead of `scratch` at n = {ahead}")
    if behind:
      parts.append(f"behind it at n = {behind}")
    if tie:
      parts.append(f"within 2 points at n = {tie}")
    lines.append("- Pretraining as a starting point: `finetune` is " + ", ".join(parts)
                 + f" (largest gap {max(diffs.values(), key=abs):+.3f}).")
  rec = [c for c in curves if c.startswith("recaption")]
  if rec:
    mentions = {}
    for r in results["recaption_runs"]:
      mentions.setdefault(r["recaption_fraction"], []).append(r["mentions"])
    parts = []
    for c in rec:
      f = float(c.split("=")[1])
      parts.append(f"f = {f:g} ({np.mean(mentions[f]):.0f} light captions of {cfg.num_train}): "
                   f"{light(c, min(cfg.n_labels)):.3f} at n = {min(cfg.n_labels)}, "
                   f"{light(c, top):.3f} at n = {top}")
    lines.append(f"- Re-captioning ({cfg.recaption_steps} more contrastive steps), then a probe "
                 "on the new embedding: " + "; ".join(parts) + ". Its light labels come from "
                 "captions, so its cost is those captions plus the n probe labels.")
  if "probe" in curves:
    base = by[("probe", top)]["car_acc_mean"]
    worst = {c: min(by[(c, n)]["car_acc_mean"] for n in cfg.n_labels) for c in curves}
    dropped = [f"`{c}` ({v:.3f})" for c, v in worst.items() if v < base - 0.05]
    kept = [c for c, v in worst.items() if v >= base - 0.05]
    lines.append(f"- Car colour (the pretrained embedding's probe: {base:.3f}): within 5 points "
                 f"at every n for " + (", ".join(f"`{c}`" for c in kept) or "no method")
                 + ("; lower for " + ", ".join(dropped) + " (worst n)" if dropped else "") + ".")
  return lines


def results_markdown(cfg, results: dict) -> str:
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves = curve_order(cfg)
  light_table = report.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels] + [f"n for {cfg.target_acc:.0%}"],
      [[c] + [report.pm(by[(c, n)], "light_acc") for n in cfg.n_labels]
       + [_fmt_n(results["smallest_n"][c])] for c in curves])
  car_table = report.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels] + ["train s (mean, largest n)"],
      [[c] + [report.pm(by[(c, n)], "car_acc") for n in cfg.n_labels]
       + [f"{by[(c, max(cfg.n_labels))]['train_seconds_mean']:.1f}"] for c in curves])
  pre = results["pretrain"]
  source = (f"loaded from `{cfg.pretrained_workdir}`" if cfg.pretrained_workdir else
            f"pretrained here ({np.mean([p['train_seconds'] for p in pre]):.0f} s per seed)")
  return (f"# Recovery study: bringing back the {LIGHT} after p = 0 captions\n\n"
          f"Start: {cfg.loss} dual encoder, embedding dim {cfg.embed_dim}, {pre[0]['steps']} "
          f"steps on {cfg.num_train} scenes whose captions never mention the {LIGHT}, "
          f"{source}. Seeds {list(cfg.seeds)}; accuracy on {cfg.num_test} held-out scenes, mean ± "
          f"95% interval over seeds (the mean alone for one seed); chance 0.50 ({LIGHT}), 0.25 "
          f"(car colour). finetune / scratch: {cfg.tune_steps} steps, batch "
          f"{cfg.tune_batch_size}; recaption: {cfg.recaption_steps} contrastive steps, then a "
          f"probe.\n\n"
          f"## {LIGHT.capitalize()} accuracy vs labelled scenes n\n\n{light_table}\n\n"
          f"## Car-colour accuracy (probe on the same representation; its labels come free with "
          f"every caption, so it always uses all {max(cfg.n_labels)} pool scenes)\n\n"
          f"{car_table}\n\n## Reading (generated from the numbers)\n\n"
          + "\n".join(reading(cfg, results)) + "\n\nTraining curves of every trained run: "
          "loss_curves.png.\n")



def plot(workdir: workdir_lib.Workdir, cfg, summary: list[dict]) -> None:
  plt = report.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  for ax, metric, title, chance in ((axes[0], "light_acc", f"{LIGHT} (held out)", 0.5),
                                    (axes[1], "car_acc", "car colour (same representation)",
                                     0.25)):
    for name in curve_order(cfg):
      ss = sorted((s for s in summary if s["curve"] == name), key=lambda s: s["n_labels"])
      ax.errorbar([s["n_labels"] for s in ss], [s[metric + "_mean"] for s in ss],
                  yerr=[np.nan_to_num(s.get(metric + "_ci95", 0.0)) for s in ss], fmt="-o",
                  capsize=2, ms=3, label=name)
    ax.axhline(chance, color="grey", ls=":", label="chance")
    if metric == "light_acc":
      ax.axhline(cfg.target_acc, color="grey", ls="--", label=f"{cfg.target_acc:.0%}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled scenes n")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
  axes[0].set_ylabel("accuracy (± 95% interval)")
  axes[1].legend(fontsize=7, loc="lower right")
  fig.suptitle(f"Labels to recover the {LIGHT} after p = 0 captions")
  workdir_lib.save_figure(fig, workdir.file("labels_to_recover.png"))
  plt.close(fig)


def publish(workdir: workdir_lib.Workdir, cfg, rows: list, pretrain: list, recaption_runs: list,
            trained: list[tuple[str, int]]) -> str:
  order = curve_order(cfg)
  rows = sorted(rows, key=lambda r: (order.index(curve(r)), r["n_labels"], r["seed"]))
  summary = summarize(rows)
  results = {"study": "recover", "flags": workdir.flags, "rows": rows, "summary": summary,
             "smallest_n": smallest_n(cfg, summary), "target_acc": cfg.target_acc,
             "pretrain": pretrain, "recaption_runs": recaption_runs}
  markdown = results_markdown(cfg, results)

  def figures(w: workdir_lib.Workdir) -> None:
    plot(w, cfg, summary)
    report.plot_loss_curves(w, trained)

  workdir.publish(results, markdown, figures)
  return markdown
