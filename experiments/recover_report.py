"""The recovery study's report: summaries over seeds, paired differences with Holm-Bonferroni
families, tables, the generated reading, figures, and the study's page.

``publish(workdir, cfg, rows, pretrain, recaption, runs, timing)`` writes results.json,
results.md, labels_to_recover.png (light and car accuracy vs n, methods and references),
recaption_steps.png (light vs contrastive steps and captions seen), collapsed_runs.png (the
training curves of every flagged run, when there is one) and loss_curves.png (the contrastive
``runs``). ``document(results)`` is docs/studies/recover.md from the saved results. A row's curve
is its method (or reference); a re-caption row's is ``<start> f=<f>``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from experiments import recover_runs as rr
from experiments import report
from experiments import workdir as workdir_lib
from experiments.recover_config import RecoverConfig
from invariance import recovery

LIGHT = rr.LIGHT
CHANCE = 0.5
ALPHA = 0.05
SURVIVES = "†"             # marks a paired interval that survives Holm-Bonferroni in its family
DEFAULT = "recover_default"


def config_of(results: dict) -> RecoverConfig:
  """The config a results.json was made with (its ``flags``: the result-defining fields)."""
  names = {f.name for f in dataclasses.fields(RecoverConfig)}
  return RecoverConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in results["flags"].items() if k in names})


def curve(row: dict) -> str:
  return row["method"]


def recaption_curve(row: dict) -> str:
  return f"{row['start']} f={row['recaption_fraction']:g}"


def curve_order(cfg) -> list[str]:
  return rr.curves(cfg.methods, cfg.references)


def summarize(rows: list[dict]) -> list[dict]:
  return report.summarize([dict(r, curve=curve(r)) for r in rows], ["curve", "n_labels"],
                          ["light_acc", "car_acc", "val_acc", "best_step", "train_seconds"])


def summarize_recaption(rows: list[dict]) -> list[dict]:
  return report.summarize([dict(r, curve=recaption_curve(r)) for r in rows], ["curve", "steps"],
                          ["light_acc", "car_acc", "captions_seen", "light_captions_seen"])


# -- paired differences ---------------------------------------------------------------------------
def paired_family(values: dict, contrasts, xs) -> list[dict]:
  """Per-seed differences a - b of ``values[(curve, x)] = {seed: accuracy}`` for every contrast
  (a, b) and x where both curves ran, read as one Holm family: each entry has ``a``, ``b``,
  ``x`` and ``report.holm_family``'s statistics (``mean``, ``ci``, ``p_holm``, ``survives``)."""
  diffs = {}
  for a, b in contrasts:
    for x in xs:
      if (a, x) in values and (b, x) in values:
        seeds = sorted(set(values[(a, x)]) & set(values[(b, x)]))
        diffs[(a, b, x)] = [values[(a, x)][s] - values[(b, x)][s] for s in seeds]
  stats = report.holm_family({f"{a} - {b} @ {x}": d for (a, b, x), d in diffs.items()}, ALPHA)
  return [{"a": a, "b": b, "x": x, **stats[f"{a} - {b} @ {x}"]} for (a, b, x) in diffs]


def paired(cfg, rows: list[dict], recaption: list[dict]) -> dict:
  """The study's three families of paired differences (``recover_runs`` contrasts): frozen
  probes and trained methods at each n, re-captioning starts at each step."""
  by_curve: dict = {}
  for r in rows:
    by_curve.setdefault((curve(r), r["n_labels"]), {})[r["seed"]] = r["light_acc"]
  by_start: dict = {}
  for r in recaption:
    if r["steps"] and r["recaption_fraction"] == max(cfg.recaption_fractions):
      by_start.setdefault((r["start"], r["steps"]), {})[r["seed"]] = r["light_acc"]
  return {"probes": paired_family(by_curve, rr.PROBE_CONTRASTS, cfg.n_labels),
          "trained": paired_family(by_curve, rr.TRAINED_CONTRASTS, cfg.n_labels),
          "recaption": paired_family(by_start, rr.RECAPTION_CONTRASTS, cfg.recaption_steps)}


def fmt_diff(e: dict) -> str:
  if not math.isfinite(e["ci"]):
    return f"{e['mean']:+.3f}"
  return f"{e['mean']:+.3f} ± {e['ci']:.3f}" + (f" {SURVIVES}" if e["survives"] else "")


def excludes_zero(e: dict) -> bool:
  return math.isfinite(e["ci"]) and abs(e["mean"]) > e["ci"]


def paired_table(family: list[dict], xs, x_name: str) -> str:
  pairs = list(dict.fromkeys((e["a"], e["b"]) for e in family))
  by = {(e["a"], e["b"], e["x"]): e for e in family}
  return report.markdown_table(
      ["difference (per seed)"] + [f"{x_name} = {x}" for x in xs],
      [[f"`{a}` - `{b}`"] + [fmt_diff(by[(a, b, x)]) if (a, b, x) in by else "-" for x in xs]
       for a, b in pairs])


def paired_reading(family: list[dict], x_name: str) -> list[str]:
  """One line per contrast: where its 95% interval excludes 0, and where that survives Holm."""
  lines = []
  for a, b in dict.fromkeys((e["a"], e["b"]) for e in family):
    es = [e for e in family if (e["a"], e["b"]) == (a, b)]
    out = [e for e in es if excludes_zero(e)]
    held = [e for e in out if e["survives"]]
    where = lambda group: ", ".join(f"{e['x']} ({fmt_diff(e)})" for e in group)
    if not any(math.isfinite(e["ci"]) for e in es):
      text = f"one seed, no interval ({x_name} = {where(es)})"
    elif out:
      text = f"its 95% interval excludes 0 at {x_name} = {where(out)}"
    else:
      text = f"no 95% interval excludes 0 ({x_name} = {where(es)})"
    if out:
      text += ("; " + (f"after Holm across the family's {es[0]['m']} intervals, at "
                       f"{x_name} = {', '.join(str(e['x']) for e in held)}" if held else
                       f"none of these survives Holm across the family's {es[0]['m']} "
                       "intervals"))
    lines.append(f"- `{a}` - `{b}`: {text}.")
  return lines


# -- read-outs over n -----------------------------------------------------------------------------
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
    got = recovery.smallest_n(cfg.n_labels, by_seed, cfg.target_acc)
    got["per_seed"] = {str(seed): v for seed, v in got["per_seed"].items()}   # as JSON keeps it
    out[name] = {"grid": ok[0] if ok else None, **got}
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


def fmt_n(n) -> str:
  return "-" if n is None else f"{n:.0f}"


def monotone_check(cfg, summary: list[dict]) -> list[dict]:
  """For each trained method, the steps of n where the mean falls by more than the seed spread
  (the 95% intervals of the two n do not overlap)."""
  by = {(s["curve"], s["n_labels"]): s for s in summary}
  ci = lambda s: s["light_acc_ci95"] if math.isfinite(s.get("light_acc_ci95", math.nan)) else 0.0
  out = []
  for m in cfg.trained:
    drops = [[a, b] for a, b in zip(cfg.n_labels, cfg.n_labels[1:])
             if by[(m, b)]["light_acc_mean"] + ci(by[(m, b)])
             < by[(m, a)]["light_acc_mean"] - ci(by[(m, a)])]
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
      f["run"] = rr.tune_run(f["curve"], f["n_labels"], row["learning_rate"])
  return flagged


# -- markdown -------------------------------------------------------------------------------------
def reading(cfg, results: dict) -> list[str]:
  """The reading, generated from the numbers (no claim is hard-coded)."""
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves, top, bottom = curve_order(cfg), max(cfg.n_labels), min(cfg.n_labels)
  lines = []
  frozen = [c for c in curves if c in rr.PROBES]
  if frozen:
    lines.append(f"- Frozen towers, all {top} labels (chance 0.50): " + ", ".join(
        f"`{c}` {report.pm(by[(c, top)], 'light_acc')}" for c in frozen) + ".")
  small = results["smallest_n"]
  lines.append(f"- Smallest n reaching {cfg.target_acc:.0%} light accuracy (per seed, "
               "interpolated in log n; geometric mean [95% interval] over seeds): "
               + ", ".join(f"`{c}` {fmt_smallest(small[c], top, bottom)}" for c in curves) + ".")
  families = results["paired"]
  lines.append("- Frozen probes, paired by seed (same labels, same init):")
  lines += ["  " + line for line in paired_reading(families["probes"], "n")]
  lines.append("- Trained methods, paired by seed (same labels, same validation split, same "
               "batches):")
  lines += ["  " + line for line in paired_reading(families["trained"], "n")]
  if families["recaption"]:
    lines.append(f"- Re-captioning (f = {max(cfg.recaption_fractions):g}), light probe on the "
                 "embedding, paired by seed at matched steps:")
    lines += ["  " + line for line in paired_reading(families["recaption"], "step")]
  flagged = results["collapsed"]
  lines.append(f"- Runs flagged as collapsed (at chance, < {CHANCE + recovery.CHANCE_MARGIN:.2f}, "
               f"where the method otherwise reaches {recovery.works(CHANCE):.2f}): "
               + (", ".join(f"`{f['curve']}` n = {f['n_labels']} seed {f['seed']}"
                            for f in flagged) if flagged else "none") + ".")
  capped: dict = {}
  for r in results["rows"]:
    if r.get("cap_limited"):
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


def setup(cfg, results: dict) -> str:
  """What the results were made with, in one paragraph."""
  pre = results["pretrain"]
  source = (f"loaded from `{cfg.pretrained_workdir}`" if cfg.pretrained_workdir else
            f"pretrained here ({np.mean([p['train_seconds'] for p in pre]):.0f} s per tower and "
            "seed)")
  fit, held = cfg.split(min(cfg.n_labels))
  return (
      f"Towers: {cfg.loss} dual encoder, embedding dim {cfg.embed_dim}, {pre[0]['steps']} steps on "
      f"{cfg.num_train} scenes, {source}: p0 (captions never mention the {LIGHT}), p1 (always; "
      f"upper reference), init (the random init both started from; lower reference). Seeds "
      f"{list(cfg.seeds)}; accuracy on {cfg.num_test} held-out scenes, mean ± 95% interval over "
      f"seeds; chance 0.50 ({LIGHT}), 0.25 (car colour). Probes: logistic regression (C = 1) on "
      f"the first n pool scenes. Trained methods use the same n labels and no others: the last "
      f"{cfg.val_fraction:g} of them (at n = {min(cfg.n_labels)}: {held} scenes; {fit} train) "
      f"validate, the rest train; learning rates {list(cfg.learning_rates)} (Adam, cosine decay "
      f"over a {cfg.tune_steps}-step cap, batch {cfg.tune_batch_size}), validation accuracy every "
      f"{cfg.eval_every} steps, stop after {cfg.patience} evaluations without a gain of more "
      f"than {cfg.min_delta:g}, best parameters kept (the start counts); the learning rate with "
      f"the best validation accuracy is reported. Paired differences: per seed, mean ± 95% "
      f"t-interval; {SURVIVES}: survives Holm-Bonferroni (α = {ALPHA:g}) across its table's "
      f"intervals.")


def tables(cfg, results: dict, level: int = 2) -> str:
  """Every table and the reading: the sections of results.md (``level`` 2) and of the study's
  page (3)."""
  h = "#" * level
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
      [[c] + [fmt_n(results["smallest_n"][c]["per_seed"].get(str(s))) for s in cfg.seeds]
       for c in curves])
  car_table = report.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels],
      [[c] + [report.pm(by[(c, n)], "car_acc") for n in cfg.n_labels] for c in curves])
  tuned_rows = [r for r in results["rows"] if r["method"] in cfg.trained]
  lr_table = report.markdown_table(
      ["method", "n (train + validate)", "learning rate chosen (seeds)", "best step (mean)",
       f"still improving at the {cfg.tune_steps}-step cap (seeds)", "val acc (mean)",
       "train s (mean, all lr)"],
      [[m, f"{n} ({cfg.split(n)[0]} + {cfg.split(n)[1]})",
        ", ".join(f"{lr:g}: {sum(r['learning_rate'] == lr for r in rs)}"
                  for lr in cfg.learning_rates),
        f"{np.mean([r['best_step'] for r in rs]):.0f}",
        f"{sum(r['cap_limited'] for r in rs)}/{len(rs)}",
        f"{np.mean([r['val_acc'] for r in rs]):.3f}",
        f"{np.mean([r['train_seconds'] for r in rs]):.1f}"]
       for m in cfg.trained for n in cfg.n_labels
       for rs in [[r for r in tuned_rows if r["method"] == m and r["n_labels"] == n]]])
  rec = {(s["curve"], s["steps"]): s for s in results["recaption_summary"]}
  steps = (0,) + tuple(cfg.recaption_steps)
  rec_table = report.markdown_table(
      ["start", "f"] + [f"step {s}" for s in steps],
      [[start, f"{f:g}"] + [report.pm(rec[(f"{start} f={f:g}", s)], "light_acc")
                            if (f"{start} f={f:g}", s) in rec else "-" for s in steps]
       for f in cfg.recaption_fractions for start in cfg.recaption_starts]
      + [["captions seen", ""] + [str(s * cfg.contrastive_batch_size) for s in steps]]
  ) if cfg.recaption_starts else "Not run (--recaption_starts is empty)."
  flagged = results["collapsed"]
  flag_table = report.markdown_table(
      ["method", "n", "seed", "light acc", "rule", "reading of its runs"],
      [[f["curve"], f["n_labels"], f["seed"], f"{f['light_acc']:.3f}", f["why"],
        f["explanation"]] for f in flagged]) if flagged else "None."
  families = results["paired"]
  rec_paired = (paired_table(families["recaption"], cfg.recaption_steps, "step")
                if families["recaption"] else "Not run.")
  return (
      f"{h} {LIGHT.capitalize()} accuracy vs labelled scenes n\n\n{light_table}\n\n"
      f"(!k): k runs of that cell flagged as collapsed (below). Smallest n over seeds: each "
      f"seed's crossing of {cfg.target_acc:.0%}, interpolated in log2 n between grid points, "
      f"geometric mean [95% t-interval] over seeds; \"k/S seeds\" when some seed never reaches "
      f"it. Per seed:\n\n{per_seed}\n\n"
      f"{h} Paired differences: frozen probes\n\n"
      f"{paired_table(families['probes'], cfg.n_labels, 'n')}\n\n"
      f"{h} Paired differences: trained methods\n\n"
      f"{paired_table(families['trained'], cfg.n_labels, 'n')}\n\n"
      f"{h} Runs flagged as collapsed\n\nAt chance (< {CHANCE + recovery.CHANCE_MARGIN:.2f}) while "
      f"the median of the other seeds of the cell reaches {recovery.works(CHANCE):.2f}, or while "
      f"the same seed reached it at a smaller n; each stays in the means above. Training curves: "
      f"collapsed_runs.png.\n\n{flag_table}\n\n"
      f"{h} Learning rates chosen on validation\n\n{lr_table}\n\n"
      f"{h} Matched-step re-captioning (light probe on the embedding, all {top} pool labels)\n\n"
      f"Re-captioned scenes: fraction f of the {cfg.num_train} training captions mention the "
      f"{LIGHT}; Adam at {cfg.recaption_learning_rate:g} after {cfg.recaption_warmup_steps} "
      f"warmup steps, constant (checkpoints of one run per start); batch "
      f"{cfg.contrastive_batch_size}.\n\n{rec_table}\n\n"
      f"Paired by seed at matched steps (f = {max(cfg.recaption_fractions):g}):\n\n"
      f"{rec_paired}\n\n"
      f"{h} Car-colour accuracy (probe on the same representation, all {top} pool scenes)\n\n"
      f"{car_table}\n\n{h} Reading (generated from the numbers)\n\n"
      + "\n".join(reading(cfg, results)) + "\n")


def results_markdown(cfg, results: dict) -> str:
  return (f"# Recovery study: bringing back the {LIGHT} after p = 0 captions\n\n"
          f"{setup(cfg, results)}\n\n{tables(cfg, results)}\n"
          "Figures: labels_to_recover.png, loss_curves.png"
          + (", recaption_steps.png" if cfg.recaption_starts else "")
          + (", collapsed_runs.png" if results["collapsed"] else "") + ".\n")


def method_list(cfg) -> str:
  """The curves of the study, one line each, from their recipes (``recover_runs``)."""
  start = {"p0": "p0 tower", "p1": "p1 tower", "init": "init tower (p0's start)"}
  lines = []
  for name, probe in rr.PROBES.items():
    layer = "embedding" if probe.representation == "embedding" else "last hidden layer"
    lines.append(f"- `{name}`: a linear probe (C = 1) on the {layer} of the frozen "
                 f"{start[probe.tower]}" + ("" if probe.tower == "p0" else "; a reference") + ".")
  for name, recipe in rr.TRAINED.items():
    what = (f"{', '.join(recipe.frozen)} frozen, the last conv, the dense layer and the head "
            "trained" if recipe.frozen else "everything trained")
    head = ("a head that starts as the linear probe on the frozen penultimate layer of its "
            "training labels (LP-FT)" if recipe.probe_head else "a random linear head")
    lines.append(f"- `{name}`: the {start[recipe.tower]} plus {head}; {what}.")
  return "\n".join(lines)


def document(results: dict[str, dict]) -> str:
  """docs/studies/recover.md from the saved ``recover_default`` results."""
  res = results[DEFAULT]
  cfg = config_of(res)
  timing = res["timing"]
  return (
      "# Recovery: bringing back what caption curation left out\n\n"
      f"The caption studies train a dual encoder on dashcam scenes whose captions never mention "
      f"the {LIGHT} (p = 0). This study asks how much post-hoc tuning brings the {LIGHT} back: "
      f"how many labelled scenes n each method needs, whether starting from the p = 0 tower "
      f"beats starting from its random init (was anything kept to recover?), and whether "
      f"contrastive training on re-captioned scenes restores the {LIGHT} faster from p = 0 "
      f"than from init.\n\n"
      "## How to run\n\n"
      "The towers come from the contrastive study's default run (p = 0 and p = 1, seeds 0-4):\n\n"
      "```bash\n"
      "python -m experiments.contrastive --flagfile=experiments/configs/contrastive.flags "
      "--workdir=workdir/contrastive\n"
      "python -m experiments.recover --flagfile=experiments/configs/recover.flags "
      "--pretrained_workdir=workdir/contrastive\n"
      "```\n\n"
      "`--pretrained_workdir` is the study's input; without it p0 and p1 are first trained here "
      "(10 more runs of 400 steps). `experiments/configs/recover_full.flags` widens the grid "
      "(n 8 ... 2048, three learning rates, 800 re-captioning steps) with the same recipe; its "
      "results are not saved in docs/results.\n\n"
      f"## Methods\n\n{method_list(cfg)}\n\n"
      "Every method uses exactly its n labels: a trained method holds out the last "
      f"{cfg.val_fraction:g} of them to choose its learning rate and stopping step and trains on "
      "the rest (a single held-out split inside n, not k-fold cross-validation: it costs no "
      "extra training, and the trained methods fit on fewer labels than the probes, which use "
      "all n with a fixed C). The n scenes are the first n of a labelled pool drawn once per "
      "seed at the grid's largest n: nested within a run, but a grid with another largest n "
      "(recover_full.flags) draws other scenes for the same n. `finetune_p1` (what labels do "
      "from a tower that holds the "
      f"{LIGHT}) and `lastblock_init` (the last block trained on random frozen features: the "
      "control for `lastblock`) are the one-change controls. Matched-step re-captioning "
      f"continues contrastive training from p0, init and p1 on the same scenes with captions "
      f"that mention the {LIGHT} (fraction f), one schedule and the same batches for every "
      "start, and probes the embedding at each step count.\n\n"
      f"## Results (docs/results/{DEFAULT})\n\n{setup(cfg, res)}\n\n"
      f"Wall time of the saved run: {timing['wall_seconds']:.0f} s for "
      f"{timing['rows_computed']} of {timing['rows']} rows computed in that process, on a 2-core "
      f"CPU VM shared with other jobs (load and CPU time: docs/results/{DEFAULT}/RUN.md).\n\n"
      + tables(cfg, res, level=3)
      + f"\n![labels to recover](../results/{DEFAULT}/labels_to_recover.png)\n"
      + (f"![re-captioning](../results/{DEFAULT}/recaption_steps.png)\n"
         if cfg.recaption_starts else ""))


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
            runs: list[tuple[str, int]], timing: dict) -> str:
  order = curve_order(cfg)
  rows = sorted(rows, key=lambda r: (order.index(curve(r)), r["n_labels"], r["seed"]))
  rows = [dict(r, cap_limited=recovery.cap_limited(r, cfg.tune_steps, cfg.eval_every))
          if "lr_grid" in r else r for r in rows]
  summary = summarize(rows)
  rec_summary = summarize_recaption(recaption)
  results = {"study": "recover", "flags": workdir.flags, "rows": rows, "summary": summary,
             "smallest_n": smallest_n(cfg, rows, summary), "target_acc": cfg.target_acc,
             "collapsed": collapsed(rows), "monotone": monotone_check(cfg, summary),
             "paired": paired(cfg, rows, recaption), "pretrain": pretrain,
             "recaption_rows": recaption, "recaption_summary": rec_summary, "timing": timing}
  markdown = results_markdown(cfg, results)

  def figures(w: workdir_lib.Workdir) -> None:
    plot_labels(w, cfg, summary)
    if recaption:
      plot_recaption(w, cfg, rec_summary)
    plot_collapsed(w, results["collapsed"])
    report.plot_loss_curves(w, runs)

  workdir.publish(results, markdown, figures)
  return markdown
