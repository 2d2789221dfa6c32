"""The recovery study's report: summaries over seeds, tables, the generated reading, figures.

``publish(workdir, cfg, rows, pretrain, recaption, runs)`` writes results.json, results.md,
labels_to_recover.png (light and car accuracy vs n, methods and references), recaption_steps.png
(light vs contrastive steps and captions seen), collapsed_runs.png (the training curves of every
flagged run, when there is one) and loss_curves.png (the contrastive ``runs``), and returns the
markdown. A row's curve is its method (or reference); a re-caption row's is ``<start> f=<f>``.
"""
from __future__ import annotations

import math

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import recovery

LIGHT = dashcam.LIGHT
TRAINED = ("finetune", "lpft", "lastblock", "scratch")
CHANCE = 0.5


def curve(row: dict) -> str:
  return row["method"]


def recaption_curve(row: dict) -> str:
  return f"{row['start']} f={row['recaption_fraction']:g}"


def curve_order(cfg) -> list[str]:
  refs = [f"{ref}_probe{suffix}" for ref in cfg.references for suffix in ("", "_penultimate")]
  return list(cfg.methods) + refs


def summarize(rows: list[dict]) -> list[dict]:
  return report.summarize([dict(r, curve=curve(r)) for r in rows], ["curve", "n_labels"],
                          ["light_acc", "car_acc", "val_acc", "best_step", "train_seconds"])


def summarize_recaption(rows: list[dict]) -> list[dict]:
  return report.summarize([dict(r, curve=recaption_curve(r)) for r in rows], ["curve", "steps"],
                          ["light_acc", "car_acc", "captions_seen", "light_captions_seen"])


def smallest_n(cfg, rows: list[dict], summary: list[dict]) -> dict:
  """Per curve: ``grid`` (the smallest n whose mean reaches the target; None: never) and the
  per-seed crossing with its interval over seeds (``recovery.smallest_n``)."""
  out = {}
  for name in curve_order(cfg):
    ok = sorted(s["n_labels"] for s in summary
                if s["curve"] == name and s["light_acc_mean"] >= cfg.target_acc)
    by_seed: dict = {}
    for r in sorted((r for r in rows if curve(r) == name), key=lambda r: r["n_labels"]):
      by_seed.setdefault(r["seed"], []).append(r["light_acc"])
    out[name] = {"grid": ok[0] if ok else None,
                 **recovery.smallest_n(cfg.n_labels, by_seed, cfg.target_acc)}
  return out


def fmt_smallest(s: dict, top: int, first: int) -> str:
  """``geo-mean [low, high]`` over seeds, or how many seeds reach the target."""
  if s["seeds"] and s["at_first"] == s["seeds"]:
    return f"<= {first} (every seed)"
  if s["geo_mean"] is not None:
    if s["low"] is None:
      return f"{s['geo_mean']:.0f}"
    return f"{s['geo_mean']:.0f} [{s['low']:.0f}, {s['high']:.0f}]"
  if s["reached"] == 0:
    return f"not within {top}"
  med = "" if s["median"] is None else f", median {s['median']:.0f}"
  return f"{s['reached']}/{s['seeds']} seeds within {top}{med}"


def monotone_check(cfg, summary: list[dict]) -> list[dict]:
  """For each trained method, the steps of n where the mean falls by more than the seed spread
  (the 95% intervals of the two n do not overlap)."""
  by = {(s["curve"], s["n_labels"]): s for s in summary}
  out = []
  for m in (m for m in cfg.methods if m in TRAINED):
    drops = []
    for a, b in zip(cfg.n_labels, cfg.n_labels[1:]):
      sa, sb = by[(m, a)], by[(m, b)]
      ci = lambda s: 0.0 if not math.isfinite(s.get("light_acc_ci95", float("nan"))) else (
          s["light_acc_ci95"])
      if sb["light_acc_mean"] + ci(sb) < sa["light_acc_mean"] - ci(sa):
        drops.append([a, b])
    out.append({"method": m, "drops": drops})
  return out


def collapsed(rows: list[dict]) -> list[dict]:
  flagged = recovery.flag_collapsed(rows, curve)
  by = {(curve(r), r["n_labels"], r["seed"]): r for r in rows}
  for f in flagged:
    row = by[(f["curve"], f["n_labels"], f["seed"])]
    f["explanation"] = (recovery.explain_collapse(row) if "lr_grid" in row else
                        "a frozen-feature probe (no training run)")
    if "learning_rate" in row:
      f["run"] = f"{f['curve']}_n{f['n_labels']}_lr{row['learning_rate']:g}"
  return flagged


def _pm(entry, metric):
  return report.pm(entry, metric) if entry else "-"


def reading(cfg, results: dict) -> list[str]:
  """A reading generated from the numbers (no claim is hard-coded)."""
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves, top, bottom = curve_order(cfg), max(cfg.n_labels), min(cfg.n_labels)
  light = lambda c, n: by[(c, n)]["light_acc_mean"]
  lines = []
  frozen = [c for c in curves if "probe" in c]
  if frozen:
    lines.append(f"- Frozen towers, all {top} labels (chance 0.50): " + ", ".join(
        f"`{c}` {_pm(by[(c, top)], 'light_acc')}" for c in frozen) + ".")
  small = results["smallest_n"]
  parts = [f"`{c}` {fmt_smallest(small[c], top, bottom)}" for c in curves]
  lines.append(f"- Smallest n reaching {cfg.target_acc:.0%} light accuracy (per seed, "
               "interpolated in log n; geometric mean [95% interval] over seeds): "
               + ", ".join(parts) + ".")
  if "finetune" in curves and "scratch" in curves:
    diffs = {n: light("finetune", n) - light("scratch", n) for n in cfg.n_labels}
    lines.append("- `finetune` minus `scratch` (same recipe, p0 tower vs the init it started "
                 "from): " + ", ".join(f"n = {n}: {d:+.3f}" for n, d in diffs.items()) + ".")
  for m in ("lpft", "lastblock"):
    if m in curves and "finetune" in curves:
      lines.append(f"- `{m}` minus `finetune`: " + ", ".join(
          f"n = {n}: {light(m, n) - light('finetune', n):+.3f}" for n in cfg.n_labels) + ".")
  rec = {(s["curve"], s["steps"]): s for s in results["recaption_summary"]}
  if rec:
    last = max(cfg.recaption_steps)
    for f in cfg.recaption_fractions:
      parts = []
      for start in cfg.recaption_starts:
        c = f"{start} f={f:g}"
        parts.append(f"from {start} " + " -> ".join(
            f"{rec[(c, s)]['light_acc_mean']:.3f}" for s in (0,) + tuple(cfg.recaption_steps)))
      lines.append(f"- Re-captioning (f = {f:g}), light probe on the embedding at steps "
                   f"{[0] + list(cfg.recaption_steps)} ({cfg.contrastive_batch_size} captions a "
                   f"step; {last * cfg.contrastive_batch_size} seen at step {last}): "
                   + "; ".join(parts) + ".")
  flagged = results["collapsed"]
  lines.append(f"- Runs flagged as collapsed (at chance, < {CHANCE + recovery.CHANCE_MARGIN:.2f}, "
               f"where the method otherwise reaches {recovery.works(CHANCE):.2f}): "
               + (", ".join(f"`{f['curve']}` n = {f['n_labels']} seed {f['seed']}"
                            for f in flagged) if flagged else "none") + ".")
  tuned = [r for r in results["rows"] if "lr_grid" in r]
  capped = {}
  for r in tuned:
    if r["cap_limited"]:
      capped.setdefault((r["method"], r["n_labels"]), []).append(r["seed"])
  lines.append(f"- Runs still improving at the {cfg.tune_steps}-step cap (under-trained at this "
               "budget): " + (", ".join(f"`{m}` n = {n}: {len(s)}/{len(cfg.seeds)} seeds"
                                        for (m, n), s in sorted(capped.items())) if capped else
                              "none") + ".")
  drops = [d for d in results["monotone"] if d["drops"]]
  lines.append("- Trained methods whose mean falls as n grows beyond the seed spread (95% "
               "intervals apart): " + (", ".join(f"`{d['method']}` at n {d['drops']}"
                                                 for d in drops) if drops else "none") + ".")
  if "probe" in curves:
    base = by[("probe", top)]["car_acc_mean"]
    worst = {c: min(by[(c, n)]["car_acc_mean"] for n in cfg.n_labels) for c in cfg.methods}
    lower = [f"`{c}` ({v:.3f})" for c, v in worst.items() if v < base - 0.05]
    lines.append(f"- Car colour (p0 embedding probe {base:.3f}): more than 5 points lower at "
                 "some n for " + (", ".join(lower) if lower else "no method") + ".")
  return lines


def results_markdown(cfg, results: dict) -> str:
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves, top, bottom = curve_order(cfg), max(cfg.n_labels), min(cfg.n_labels)
  flags: dict = {}
  for f in results["collapsed"]:
    flags[(f["curve"], f["n_labels"])] = flags.get((f["curve"], f["n_labels"]), 0) + 1
  cell = lambda c, n: report.pm(by[(c, n)], "light_acc") + (
      f" (!{flags[(c, n)]})" if (c, n) in flags else "")
  light_table = report.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels]
      + [f"smallest n for {cfg.target_acc:.0%}: over seeds", "mean curve"],
      [[c] + [cell(c, n) for n in cfg.n_labels]
       + [fmt_smallest(results["smallest_n"][c], top, bottom),
          results["smallest_n"][c]["grid"] or f"not within {top}"] for c in curves])
  per_seed = report.markdown_table(
      ["method"] + [f"seed {s}" for s in cfg.seeds],
      [[c] + [("-" if results["smallest_n"][c]["per_seed"].get(s) is None else
               f"{results['smallest_n'][c]['per_seed'][s]:.0f}") for s in cfg.seeds]
       for c in curves])
  car_table = report.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels],
      [[c] + [report.pm(by[(c, n)], "car_acc") for n in cfg.n_labels] for c in curves])
  trained = [m for m in cfg.methods if m in TRAINED]
  tuned_rows = [r for r in results["rows"] if r["method"] in trained]
  lr_table = report.markdown_table(
      ["method", "n", "learning rate chosen (seeds)", "best step (mean)",
       f"still improving at the {cfg.tune_steps}-step cap (seeds)", "val acc (mean)",
       "train s (mean, all lr)"],
      [[m, n, ", ".join(f"{lr:g}: {sum(r['learning_rate'] == lr for r in rs)}"
                        for lr in cfg.learning_rates),
        f"{np.mean([r['best_step'] for r in rs]):.0f}",
        f"{sum(r['cap_limited'] for r in rs)}/{len(rs)}",
        f"{np.mean([r['val_acc'] for r in rs]):.3f}",
        f"{np.mean([r['train_seconds'] for r in rs]):.1f}"]
       for m in trained for n in cfg.n_labels
       for rs in [[r for r in tuned_rows if r["method"] == m and r["n_labels"] == n]]])
  rec = {(s["curve"], s["steps"]): s for s in results["recaption_summary"]}
  steps = (0,) + tuple(cfg.recaption_steps)
  rec_table = report.markdown_table(
      ["start", "f"] + [f"step {s}" for s in steps],
      [[start, f"{f:g}"] + [_pm(rec.get((f"{start} f={f:g}", s)), "light_acc") for s in steps]
       for f in cfg.recaption_fractions for start in cfg.recaption_starts]
      + [["captions seen", ""] + [str(s * cfg.contrastive_batch_size) for s in steps]]
  ) if cfg.recaption_starts else "Not run (--recaption_starts is empty)."
  flagged = results["collapsed"]
  flag_table = report.markdown_table(
      ["method", "n", "seed", "light acc", "rule", "reading of its runs"],
      [[f["curve"], f["n_labels"], f["seed"], f"{f['light_acc']:.3f}", f["why"],
        f["explanation"]] for f in flagged]) if flagged else "None."
  pre = results["pretrain"]
  source = (f"loaded from `{cfg.pretrained_workdir}`" if cfg.pretrained_workdir else
            f"pretrained here ({np.mean([p['train_seconds'] for p in pre]):.0f} s per tower and "
            "seed)")
  return (
      f"# Recovery study: bringing back the {LIGHT} after p = 0 captions\n\n"
      f"Towers: {cfg.loss} dual encoder, embedding dim {cfg.embed_dim}, {pre[0]['steps']} steps on "
      f"{cfg.num_train} scenes, {source}: p0 (captions never mention the {LIGHT}), p1 (always; "
      f"upper reference), init (the random init both started from; lower reference). Seeds "
      f"{list(cfg.seeds)}; accuracy on {cfg.num_test} held-out scenes, mean ± 95% interval over "
      f"seeds; chance 0.50 ({LIGHT}), 0.25 (car colour). Probes: logistic regression (C = 1) on "
      f"the first n pool scenes. Trained methods: learning rates {list(cfg.learning_rates)} "
      f"(Adam, cosine decay over a {cfg.tune_steps}-step cap, batch {cfg.tune_batch_size}), "
      f"validation accuracy on a fixed set of {cfg.num_val} further labelled scenes every "
      f"{cfg.early_stopping_every} steps, stop after {cfg.early_stopping_patience} evaluations "
      f"without a gain of 0.005, best parameters kept; the learning rate with the best "
      f"validation accuracy is reported. These {cfg.num_val} validation labels come on top of "
      f"n (the same for every trained method; the probes use none).\n\n"
      f"## {LIGHT.capitalize()} accuracy vs labelled scenes n\n\n{light_table}\n\n"
      f"(!k): k runs of that cell flagged as collapsed (below). Smallest n over seeds: each "
      f"seed's crossing of {cfg.target_acc:.0%}, interpolated in log2 n between grid points, "
      f"geometric mean [95% t-interval] over seeds; \"k/S seeds\" when some seed never reaches "
      f"it. Per seed:\n\n{per_seed}\n\n"
      f"## Runs flagged as collapsed\n\nAt chance (< {CHANCE + recovery.CHANCE_MARGIN:.2f}) while "
      f"the median of the other seeds of the cell reaches {recovery.works(CHANCE):.2f}, or while "
      f"the same seed reached it at a smaller n; each stays in the means above. Training curves: "
      f"collapsed_runs.png.\n\n"
      f"{flag_table}\n\n"
      f"## Learning rates chosen on validation\n\n{lr_table}\n\n"
      f"## Matched-step re-captioning (light probe on the embedding, all {top} pool labels)\n\n"
      f"Re-captioned scenes: fraction f of the {cfg.num_train} training captions mention the "
      f"{LIGHT}; Adam at {cfg.recaption_learning_rate:g} after {cfg.recaption_warmup_steps} "
      f"warmup steps, constant (checkpoints of one run per start); batch "
      f"{cfg.contrastive_batch_size}.\n\n{rec_table}\n\n"
      f"## Car-colour accuracy (probe on the same representation, all {top} pool scenes)\n\n"
      f"{car_table}\n\n## Reading (generated from the numbers)\n\n"
      + "\n".join(reading(cfg, results))
      + "\n\nFigures: labels_to_recover.png, loss_curves.png"
      + (", recaption_steps.png" if cfg.recaption_starts else "")
      + (", collapsed_runs.png" if flagged else "") + ".\n")


def plot_labels(workdir: workdir_lib.Workdir, cfg, summary: list[dict]) -> None:
  plt = report.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
  methods = set(cfg.methods)
  for ax, metric, title, chance in ((axes[0], "light_acc", f"{LIGHT} (held out)", 0.5),
                                    (axes[1], "car_acc", "car colour (same representation)",
                                     0.25)):
    for name in curve_order(cfg):
      ss = sorted((s for s in summary if s["curve"] == name), key=lambda s: s["n_labels"])
      ax.errorbar([s["n_labels"] for s in ss], [s[metric + "_mean"] for s in ss],
                  yerr=[np.nan_to_num(s.get(metric + "_ci95", 0.0)) for s in ss],
                  fmt="-o" if name in methods else "--s", capsize=2, ms=3, label=name,
                  alpha=1.0 if name in methods else 0.7)
    ax.axhline(chance, color="grey", ls=":", label="chance")
    if metric == "light_acc":
      ax.axhline(cfg.target_acc, color="grey", ls="-.", lw=0.8, label=f"{cfg.target_acc:.0%}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled scenes n")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
  axes[0].set_ylabel("accuracy (mean ± 95% interval)")
  axes[1].legend(fontsize=7, loc="lower right", ncol=2)
  fig.suptitle(f"Labels to recover the {LIGHT} from the p = 0 tower (dashed: reference towers)")
  workdir_lib.save_figure(fig, workdir.file("labels_to_recover.png"))
  plt.close(fig)


def plot_recaption(workdir: workdir_lib.Workdir, cfg, summary: list[dict]) -> None:
  """Light probe vs contrastive steps (ticks also give the captions seen) and vs the
  light-mentioning captions seen; log axes, step 0 drawn at half the first step."""
  plt = report.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
  batch, first = cfg.contrastive_batch_size, min(cfg.recaption_steps)
  at = lambda x, lowest: x if x > 0 else lowest / 2
  for f in cfg.recaption_fractions:
    for start in cfg.recaption_starts:
      name = f"{start} f={f:g}"
      ss = sorted((s for s in summary if s["curve"] == name), key=lambda s: s["steps"])
      err = [np.nan_to_num(s.get("light_acc_ci95", 0.0)) for s in ss]
      acc = [s["light_acc_mean"] for s in ss]
      axes[0].errorbar([at(s["steps"], first) for s in ss], acc, yerr=err, fmt="-o", capsize=2,
                       ms=3, label=f"from {name}")
      seen = [s["light_captions_seen_mean"] for s in ss]
      lowest = min([v for v in seen if v > 0], default=1.0)
      axes[1].errorbar([at(v, lowest) for v in seen], acc, yerr=err, fmt="-o", capsize=2, ms=3,
                       label=f"from {name}")
  steps = (0,) + tuple(cfg.recaption_steps)
  axes[0].set_xscale("log", base=2)
  axes[0].set_xticks([at(s, first) for s in steps],
                     [f"{s}\n{s * batch / 1000:g}k" for s in steps])
  axes[0].minorticks_off()
  axes[0].set_xlabel(f"contrastive steps / captions seen (batch {batch})")
  axes[1].set_xscale("log")
  axes[1].set_xlabel("light-mentioning captions seen (0 drawn at half the smallest)")
  for ax in axes:
    ax.axhline(0.5, color="grey", ls=":")
    ax.axhline(cfg.target_acc, color="grey", ls="-.", lw=0.8)
    ax.set_ylim(0.4, 1.02)
  axes[0].set_ylabel(f"{LIGHT} probe on the embedding\n(all {max(cfg.n_labels)} pool labels; "
                     "mean ± 95% interval)")
  axes[1].legend(fontsize=8, loc="lower right")
  fig.suptitle("Matched-step re-captioning from the p = 0 tower, random init and the p = 1 tower")
  workdir_lib.save_figure(fig, workdir.file("recaption_steps.png"))
  plt.close(fig)


def plot_collapsed(workdir: workdir_lib.Workdir, flagged: list[dict]) -> None:
  """Training loss and validation accuracy of every flagged tuned run (its chosen learning rate)."""
  runs = [f for f in flagged if "run" in f]
  if not runs:
    return
  plt = report.pyplot()
  fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.5), squeeze=False)
  for ax, f in zip(axes[0], runs):
    records = report.read_metrics(workdir.metrics_path(f["run"], f["seed"]))
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.8, label="train loss")
    val = [(r["step"], r["val"]) for r in records if "val" in r]
    ax2 = ax.twinx()
    ax2.plot([v[0] for v in val], [v[1] for v in val], "o-", color="C1", ms=3,
             label="validation acc")
    ax2.set_ylim(0.4, 1.02)
    ax.set_title(f"{f['run']} seed {f['seed']}: test {f['light_acc']:.3f}", fontsize=8)
    ax.set_xlabel("step")
  axes[0][0].set_ylabel("training loss")
  fig.suptitle("Runs flagged as collapsed: training loss (blue) and validation accuracy (orange)")
  workdir_lib.save_figure(fig, workdir.file("collapsed_runs.png"))
  plt.close(fig)


def publish(workdir: workdir_lib.Workdir, cfg, rows: list, pretrain: list, recaption: list,
            runs: list[tuple[str, int]]) -> str:
  order = curve_order(cfg)
  rows = sorted(rows, key=lambda r: (order.index(curve(r)), r["n_labels"], r["seed"]))
  rows = [dict(r, cap_limited=recovery.cap_limited(r, cfg.tune_steps, cfg.early_stopping_every))
          if "lr_grid" in r else r for r in rows]
  summary = summarize(rows)
  rec_summary = summarize_recaption(recaption)
  results = {"study": "recover", "flags": workdir.flags, "rows": rows, "summary": summary,
             "smallest_n": smallest_n(cfg, rows, summary), "target_acc": cfg.target_acc,
             "collapsed": collapsed(rows), "monotone": monotone_check(cfg, summary),
             "pretrain": pretrain, "recaption_rows": recaption,
             "recaption_summary": rec_summary}
  markdown = results_markdown(cfg, results)

  def figures(w: workdir_lib.Workdir) -> None:
    plot_labels(w, cfg, summary)
    if recaption:
      plot_recaption(w, cfg, rec_summary)
    plot_collapsed(w, results["collapsed"])
    report.plot_loss_curves(w, runs)

  workdir.publish(results, markdown, figures)
  return markdown
