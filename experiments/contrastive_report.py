"""The contrastive study's report: summaries over seeds, tables, the dose-response fit, figures.

``publish(workdir, cfg, rows, init_rows, pixel_rows)`` writes results.json, results.md and the
figures (layers_vs_init.png, light_over_training.png, dose_response.png, probe_vs_p.png,
loss_curves.png) and returns the markdown. Every number in results.md is computed here from the
saved rows; nothing is typed in.
"""
from __future__ import annotations

import math

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dose_response
from invariance.data import scenes

RUN = ("loss", "embed_dim", "policy", "lamp_size", "duplicates", "steps", "mention_prob")
SETTING = RUN[:-2]                      # a setting's runs differ in training length and p only
INIT = ("embed_dim", "lamp_size")
LIGHT = dashcam.LIGHT
DOSE_LEVEL = 0.9
MIN_DOSES = 5                           # values of p a setting needs for a dose-response fit


def _numeric(flat: dict, skip) -> list[str]:
  return [k for k, v in flat.items()
          if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)]


def _flat(row: dict) -> dict:
  out = report.flatten({k: v for k, v in row.items() if k != "alpha"}, sep="/")
  for attr, by_prompt in row.get("zero_shot", {}).items():
    out[f"zero_shot/{attr}/mean"] = float(np.mean(list(by_prompt.values())))
  return out


def summarize(rows, group) -> list[dict]:
  flat = [_flat(r) for r in rows]
  names = sorted({k for f in flat for k in _numeric(f, set(group) | {"seed", "final_loss"})})
  return report.summarize(flat, list(group), names)


def chance(attribute: str) -> float:
  return 1.0 / len(scenes.ATTRIBUTES[attribute])


def _setting_name(s: dict) -> str:
  return (f"{s['loss']}, dim {s['embed_dim']}, policy {s['policy']}, lamp {s['lamp_size']} px, "
          f"duplicates {s['duplicates']}")


def _settings(summary) -> list[dict]:
  seen = {tuple(s[k] for k in SETTING): {k: s[k] for k in SETTING} for s in summary}
  return [seen[k] for k in sorted(seen)]


def _of(summary, setting, **more) -> list[dict]:
  return [s for s in summary if all(s[k] == v for k, v in {**setting, **more}.items())]


def paired(rows, init_rows, setting, p, steps, key) -> dict:
  """``{"d_mean", "d_ci95", "n"}``: the per-seed difference trained - init of ``key`` (a flat
  row key, e.g. ``probe/embedding/light``), paired by seed (the run starts from that init), mean
  and 95% t-interval over seeds."""
  inits = {(i["seed"], i["embed_dim"], i["lamp_size"]): report.flatten(i, sep="/")
           for i in init_rows}
  diffs = []
  for r in rows:
    if r["mention_prob"] == p and r["steps"] == steps and all(
        r[k] == v for k, v in setting.items()):
      init = inits.get((r["seed"], r["embed_dim"], r["lamp_size"]))
      flat = report.flatten(r, sep="/")
      if init is not None and key in flat and key in init:
        diffs.append(flat[key] - init[key])
  if not diffs:
    return {}
  mean, _, ci = report.mean_sd_ci(diffs)
  return {"d_mean": mean, "d_ci95": ci, "n": len(diffs)}


def _signed(d: dict) -> str:
  if not d:
    return "-"
  return (f"{d['d_mean']:+.3f}" if d["n"] < 2 else f"{d['d_mean']:+.3f} ± {d['d_ci95']:.3f}")


def layer_table(cfg, summary, inits, setting, attribute, rows, init_rows) -> str:
  """Per layer: the probe for ``attribute`` and the counterfactual sensitivity, at init and after
  training at each traced p, and the selectivity trained - init paired by seed (mean ± 95%)."""
  longest = max(cfg.steps)
  by_p = {s["mention_prob"]: s for s in _of(summary, setting, steps=longest)}
  ps = [p for p in sorted(by_p) if p in cfg.trace_probs] or sorted(by_p)[:1] + sorted(by_p)[-1:]
  init = next(i for i in inits if i["embed_dim"] == setting["embed_dim"]
              and i["lamp_size"] == setting["lamp_size"])
  header = ["layer", "init probe"] + [f"p = {p:g} probe" for p in ps] + [
      f"p = {p:g} - init (paired)" for p in ps] + ["init sens."] + [f"p = {p:g} sens." for p in ps]
  out = []
  for layer in _layers(summary):
    key = f"probe/{layer}/{attribute}"
    sel = [_signed(paired(rows, init_rows, setting, p, longest, key)) for p in ps]
    sens = f"sensitivity/{layer}/{attribute}"
    out.append([layer, report.pm(init, key)] + [report.pm(by_p[p], key) for p in ps] + sel
               + [report.pm(init, sens)] + [report.pm(by_p[p], sens) for p in ps])
  return report.markdown_table(header, out)


def _layers(summary) -> list[str]:
  from experiments.contrastive import LAYERS  # pylint: disable=import-outside-toplevel
  return list(LAYERS)


def trace_table(cfg, summary, setting, attribute) -> str:
  """The probe for ``attribute`` per layer through training (traced runs), with the peak and the
  drop from the peak to the end: suppression needs a peak above init that the end falls below."""
  longest, out = max(cfg.steps), []
  for p in cfg.trace_probs:
    got = _of(summary, setting, steps=longest, mention_prob=p)
    if not got:
      continue
    s = got[0]
    steps = [t for t in cfg.probe_steps if f"trace/{t}/probe/embedding/{attribute}_mean" in s]
    rows = []
    for layer in _layers(summary):
      means = [s[f"trace/{t}/probe/{layer}/{attribute}_mean"] for t in steps]
      peak = int(np.argmax(means))
      rows.append([layer] + [report.pm(s, f"trace/{t}/probe/{layer}/{attribute}") for t in steps]
                  + [steps[peak], f"{means[peak] - means[-1]:+.3f}"])
    out.append(f"p = {p:g}:\n\n" + report.markdown_table(
        ["layer"] + [f"step {t}" for t in steps] + ["peak at", "peak - end"], rows))
  return "\n\n".join(out)


def dose(cfg, rows, setting) -> dict | None:
  """The light probe on the embedding against exposures (light-mentioning captions seen), one
  point per run and seed, with the bootstrap fit (``invariance.dose_response``)."""
  runs = [r for r in rows if all(r[k] == v for k, v in setting.items())
          and r["policy"] == "mention"]
  if len({r["mention_prob"] for r in runs}) < MIN_DOSES:      # too few doses to fit a curve
    return None
  pts = [(r["exposures"], r["probe"]["embedding"][LIGHT]) for r in runs]
  x, y = map(np.array, zip(*pts))
  try:
    fit = dose_response.bootstrap(x, y, chance(LIGHT), DOSE_LEVEL)
  except (RuntimeError, ValueError) as e:          # reported, not hidden
    return {"points": len(pts), "error": str(e)}
  return {"setting": setting, "points": len(pts), **fit}


def _dose_line(d: dict) -> str:
  if "error" in d:
    return f"{_setting_name(d['setting'])}: the fit failed ({d['error']})."
  lo, hi = d["dose_at_level_ci95"]
  fmt = lambda v: "never (ceiling below)" if math.isinf(v) else (
      "n/a" if not math.isfinite(v) else f"{v:,.0f}")
  f = d["fit"]
  return (f"- {_setting_name(d['setting'])}: {d['points']} runs; fitted ceiling {f['top']:.3f} "
          f"(95% bootstrap {d['top_ci95'][0]:.3f}-{d['top_ci95'][1]:.3f}); light probe "
          f">= {d['level']:.0%} from **{fmt(d['dose_at_level'])}** light-mentioning captions seen "
          f"(95% bootstrap interval {fmt(lo)} - {fmt(hi)}; {d['n_failed']} of {d['n_boot']} "
          "resamples failed to fit)")


def grid_table(summary) -> str:
  attrs = dashcam.ATTRIBUTES
  ss = sorted(summary, key=lambda s: tuple(s[k] for k in RUN))
  return report.markdown_table(
      ["loss", "dim", "policy", "lamp", "duplicates", "steps", "p", "n", "exposures"]
      + [f"probe {a}" for a in attrs] + ["zero-shot car", "zero-shot light", "train s"],
      [[s["loss"], s["embed_dim"], s["policy"], s["lamp_size"], s["duplicates"], s["steps"],
        f"{s['mention_prob']:g}", s["n"], f"{s['exposures_mean']:,.0f}"]
       + [report.pm(s, f"probe/embedding/{a}") for a in attrs]
       + [report.pm(s, "zero_shot/car_color/mean"), report.pm(s, f"zero_shot/{LIGHT}/mean"),
          f"{s['train_seconds_mean']:.0f}"] for s in ss])


def results_markdown(cfg, results: dict) -> str:
  summary, inits, pixels = results["summary"], results["init_summary"], results["pixel_summary"]
  parts = [
      f"# Contrastive study: captions mention the {cfg.attribute} with probability p\n",
      f"Seeds {list(cfg.seeds)}; batch {cfg.batch_size}, {cfg.num_train} training scenes, "
      f"training lengths {list(cfg.steps)} steps (warmup {cfg.warmup_steps}, cosine decay). "
      f"Probes: ridge classifiers (one-vs-rest, each regularisation chosen by leave-one-out "
      f"cross-validation on the probe-train split) on {cfg.num_probe} held-out scenes, tested on "
      f"{cfg.num_probe} more. Sensitivity: distance between a scene's features and its "
      f"one-attribute flip's over the distance to an unrelated scene ({cfg.num_pairs} pairs per "
      "attribute; 0 = ignores it). Chance: car colour 0.25, every other attribute 0.50. Mean ± "
      "95% t-interval over seeds (the mean alone for one seed).\n"]
  for setting in _settings(summary):
    name = _setting_name(setting)
    varied = "car_color" if setting["policy"] == "swap" else cfg.attribute
    for attribute in dict.fromkeys((LIGHT, varied, "car_color")):
      table = layer_table(cfg, summary, inits, setting, attribute, results["rows"],
                          results["init_rows"])
      parts.append(f"## {attribute} per layer, trained vs init ({name}, {max(cfg.steps)} steps)"
                   f"\n\n{table}\n")
    traced = trace_table(cfg, summary, setting, LIGHT)
    if traced:
      parts.append(f"## Light probe through training ({name})\n\n{traced}\n")
  doses = [d for d in results["dose_response"] if d]
  if doses:
    parts.append("## Dose-response: light probe on the embedding vs light-mentioning captions "
                 "seen\n\nFit: accuracy = 0.5 + (top - 0.5) sigmoid(slope (log10(1 + dose) - mid)) "
                 "over every run and seed of the setting (all p and training lengths), 300 "
                 "bootstrap resamples of the runs.\n\n" + "\n".join(map(_dose_line, doses)) + "\n")
  parts.append(f"## Every run (final image embedding)\n\n{grid_table(summary)}\n")
  if pixels:
    parts.append("Raw-pixel probes (ridge, once per seed and lamp size): " + "; ".join(
        f"lamp {p['lamp_size']} px: " + ", ".join(
            f"{a} {report.pm(p, f'probe/{a}')}" for a in dashcam.ATTRIBUTES) for p in pixels)
        + ".\n")
  parts.append("Figures: layers_vs_init.png, light_over_training.png, dose_response.png, "
               "probe_vs_p.png, loss_curves.png.\n")
  return "\n".join(parts)


# -- figures ----------------------------------------------------------------------------------------
def _plot_layers(w, cfg, summary, inits, plt) -> None:
  settings = _settings(summary)
  fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 3.8), squeeze=False)
  layers = _layers(summary)
  for ax, setting in zip(axes[0], settings):
    init = next(i for i in inits if i["embed_dim"] == setting["embed_dim"]
                and i["lamp_size"] == setting["lamp_size"])
    key = f"probe/{{}}/{LIGHT}"
    series = [("init", init)] + [(f"p = {s['mention_prob']:g}", s) for s in sorted(
        _of(summary, setting, steps=max(cfg.steps)), key=lambda s: s["mention_prob"])]
    for label, s in series:
      ax.errorbar(range(len(layers)), [s.get(key.format(layer) + "_mean", np.nan)
                                        for layer in layers],
                  yerr=[np.nan_to_num(s.get(key.format(layer) + "_ci95", 0.0)) for layer in layers],
                  fmt="-o", capsize=2, label=label, ls="--" if label == "init" else "-")
    ax.axhline(chance(LIGHT), color="grey", ls=":", label="chance")
    ax.set_xticks(range(len(layers)), layers, rotation=40, fontsize=7)
    ax.set_ylim(0.4, 1.02)
    ax.set_title(_setting_name(setting), fontsize=8)
    ax.set_ylabel("light probe (± 95%)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  workdir_lib.save_figure(fig, w.file("layers_vs_init.png"))
  plt.close(fig)


def _plot_trace(w, cfg, summary, plt) -> None:
  default = [s for s in _settings(summary)]
  fig, axes = plt.subplots(len(default), max(len(cfg.trace_probs), 1),
                           figsize=(5 * max(len(cfg.trace_probs), 1), 3.4 * len(default)),
                           squeeze=False)
  for row_axes, setting in zip(axes, default):
    for ax, p in zip(row_axes, cfg.trace_probs):
      got = _of(summary, setting, steps=max(cfg.steps), mention_prob=p)
      if not got:
        continue
      s = got[0]
      steps = [t for t in cfg.probe_steps if f"trace/{t}/probe/embedding/{LIGHT}_mean" in s]
      for layer in _layers(summary):
        ax.plot(steps, [s[f"trace/{t}/probe/{layer}/{LIGHT}_mean"] for t in steps], "-o", ms=3,
                label=layer)
      ax.axhline(chance(LIGHT), color="grey", ls=":")
      ax.set_xscale("symlog", linthresh=max(min([t for t in steps if t > 0], default=1), 1))
      ax.set_xlabel("training step (0 = init)")
      ax.set_ylabel("light probe (mean over seeds)")
      ax.set_ylim(0.4, 1.02)
      ax.set_title(f"p = {p:g}; {_setting_name(setting)}", fontsize=8)
  axes[0][0].legend(fontsize=6)
  fig.tight_layout()
  workdir_lib.save_figure(fig, w.file("light_over_training.png"))
  plt.close(fig)


def _plot_dose(w, cfg, rows, doses, plt) -> None:
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for d in doses:
    if "fit" not in d:
      continue
    setting = d["setting"]
    for steps in cfg.steps:
      pts = [(r["exposures"], r["probe"]["embedding"][LIGHT]) for r in rows if r["steps"] == steps
             and all(r[k] == v for k, v in setting.items())]
      if pts:
        x, y = zip(*pts)
        ax.plot(np.array(x) + 1, y, "o", ms=4, alpha=0.7,
                label=f"{setting['loss']} d{setting['embed_dim']}, {steps} steps")
    grid = np.logspace(0, math.log10(max(r["exposures"] for r in rows) + 1), 200)
    ax.plot(grid, dose_response.curve(grid - 1, chance=chance(LIGHT), **d["fit"]), "-", lw=1.5,
            label=f"fit {setting['loss']} d{setting['embed_dim']}")
  ax.axhline(DOSE_LEVEL, color="grey", ls="--", lw=0.8)
  ax.axhline(chance(LIGHT), color="grey", ls=":")
  ax.set_xscale("log")
  ax.set_xlabel("1 + light-mentioning captions seen in training")
  ax.set_ylabel("light probe on the embedding")
  ax.set_ylim(0.4, 1.02)
  ax.legend(fontsize=7)
  workdir_lib.save_figure(fig, w.file("dose_response.png"))
  plt.close(fig)


def _plot_probe_vs_p(w, cfg, summary, pixels, plt) -> None:
  attrs = dashcam.ATTRIBUTES
  fig, axes = plt.subplots(1, len(attrs), figsize=(4 * len(attrs), 3.4), sharey=True)
  positive = [p for p in cfg.mention_probs if p > 0]
  for ax, attr in zip(axes, attrs):
    for setting in _settings(summary):
      for steps in cfg.steps:
        ss = sorted(_of(summary, setting, steps=steps), key=lambda s: s["mention_prob"])
        ax.errorbar([s["mention_prob"] for s in ss],
                    [s[f"probe/embedding/{attr}_mean"] for s in ss],
                    yerr=[np.nan_to_num(s.get(f"probe/embedding/{attr}_ci95", 0.0)) for s in ss],
                    fmt="-o", capsize=2, ms=3,
                    label=f"{setting['loss']} d{setting['embed_dim']} {setting['policy']} "
                          f"lamp{setting['lamp_size']} {steps} st")
    ax.axhline(chance(attr), color="grey", ls=":")
    for p in pixels[:1]:
      ax.axhline(p[f"probe/{attr}_mean"], color="grey", ls="-.", label="raw pixels")
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlabel("p")
    ax.set_title(attr)
    ax.set_ylim(0, 1.02)
  axes[0].set_ylabel("probe on the embedding (± 95%)")
  axes[-1].legend(fontsize=5)
  workdir_lib.save_figure(fig, w.file("probe_vs_p.png"))
  plt.close(fig)


def publish(workdir: workdir_lib.Workdir, cfg, rows: list, init_rows: list,
            pixel_rows: list) -> str:
  from experiments.contrastive import run_name  # pylint: disable=import-outside-toplevel
  summary = summarize(rows, RUN)
  inits = summarize(init_rows, INIT)
  pixels = summarize(pixel_rows, ("lamp_size",))
  doses = [dose(cfg, rows, s) for s in _settings(summary) if s["policy"] == "mention"]
  results = {"study": "contrastive", "flags": workdir.flags, "rows": rows, "init_rows": init_rows,
             "pixel_rows": pixel_rows, "summary": summary, "init_summary": inits,
             "pixel_summary": pixels, "dose_response": doses}
  markdown = results_markdown(cfg, results)

  def figures(w: workdir_lib.Workdir) -> None:
    plt = report.pyplot()
    _plot_layers(w, cfg, summary, inits, plt)
    if cfg.trace_probs and cfg.probe_steps:
      _plot_trace(w, cfg, summary, plt)
    _plot_dose(w, cfg, rows, [d for d in doses if d], plt)
    _plot_probe_vs_p(w, cfg, summary, pixels, plt)
    report.plot_loss_curves(w, [(run_name(cfg, r), s) for r in cfg.runs() for s in cfg.seeds])

  workdir.publish(results, markdown, figures)
  return markdown


# -- the second edition re-read with Holm-Bonferroni (third edition) -----------------------------
HOLM_ATTRS = ("light", "pedestrian", "clouds", "car_color")


def holm_reread(results: dict) -> tuple[dict, str]:
  """A saved second-edition results.json re-read as one family: every run setting x layer x
  attribute, trained minus its own init paired by seed (``paired``), Holm-Bonferroni at 0.05
  (``report.holm_family``). Returns the family and its markdown."""
  rows, init_rows, cfg_steps = results["rows"], results["init_rows"], max(
      r["steps"] for r in results["rows"])
  diffs = {}
  for s in _settings(summarize(rows, RUN)):
    for p in sorted({r["mention_prob"] for r in rows}):
      for layer in _layers(None):
        for attr in HOLM_ATTRS:
          key = f"probe/{layer}/{attr}"
          inits = {(i["seed"], i["embed_dim"], i["lamp_size"]): report.flatten(i, sep="/")[key]
                   for i in init_rows}
          got = [report.flatten(r, sep="/")[key] - inits[(r["seed"], r["embed_dim"], r["lamp_size"])]
                 for r in rows if r["mention_prob"] == p and r["steps"] == cfg_steps
                 and all(r[k] == v for k, v in s.items())]
          if got:
            diffs[f"{_setting_name(s)}, p = {p:g}: {layer} {attr}"] = got
  fam = report.holm_family(diffs)
  lines = [[k, v["n"], f"{v['mean']:+.3f} ± {v['ci']:.3f}" if v["n"] > 1 else f"{v['mean']:+.3f}",
            f"{v['p']:.3g}", f"{v['p_holm']:.3g}", "yes" if v["survives"] else ""]
           for k, v in fam.items()]
  text = (f"{len(fam)} paired endpoints (trained - init, per setting x p x layer x attribute), "
          f"Holm-Bonferroni at 0.05: {sum(v['survives'] for v in fam.values())} survive.\n\n"
          + report.markdown_table(["endpoint", "n", "trained - init (95%)", "p", "Holm p",
                                   "survives"], lines))
  return fam, text
