"""The contrastive study's report: summaries over seeds, tables, the dose-response fit, figures.

``publish(workdir, cfg, rows, init_rows, pixel_rows)`` writes results.json, results.md and the
figures (layers_vs_init.png, light_over_training.png, dose_response.png, probe_vs_p.png,
loss_curves.png) and returns the markdown. Every number in results.md is computed here from the
saved rows; nothing is typed in. ``document`` (``experiments.contrastive_page``) is the study's
page across its saved results (``experiments.docs``).
"""
from __future__ import annotations

import math

import numpy as np

from experiments import contrastive_dose_fit as dose_fit
from experiments import report
from experiments import workdir as workdir_lib
from experiments.contrastive_page import document  # noqa: F401  (experiments.docs reads it here)
from experiments.contrastive_runs import LAYERS, grid
from invariance import dashcam
from invariance import dose_response
from invariance.data import scenes

RUN = ("loss", "embed_dim", "policy", "lamp_size", "duplicates", "steps", "mention_prob")
SETTING = RUN[:-2]                      # a setting's runs differ in training length and p only
INIT = ("embed_dim", "lamp_size")
LIGHT = dashcam.LIGHT
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
  for layer in LAYERS:
    key = f"probe/{layer}/{attribute}"
    sel = [_signed(paired(rows, init_rows, setting, p, longest, key)) for p in ps]
    sens = f"sensitivity/{layer}/{attribute}"
    out.append([layer, report.pm(init, key)] + [report.pm(by_p[p], key) for p in ps] + sel
               + [report.pm(init, sens)] + [report.pm(by_p[p], sens) for p in ps])
  return report.markdown_table(header, out)


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
    for layer in LAYERS:
      means = [s[f"trace/{t}/probe/{layer}/{attribute}_mean"] for t in steps]
      peak = int(np.argmax(means))
      rows.append([layer] + [report.pm(s, f"trace/{t}/probe/{layer}/{attribute}") for t in steps]
                  + [steps[peak], f"{means[peak] - means[-1]:+.3f}"])
    out.append(f"p = {p:g}:\n\n" + report.markdown_table(
        ["layer"] + [f"step {t}" for t in steps] + ["peak at", "peak - end"], rows))
  return "\n\n".join(out)


def dose(cfg, rows, setting) -> dict | None:
  """The light probe on the embedding against exposures (light-mentioning captions seen), fitted
  over the setting's converged runs (``contrastive_dose_fit.fit``); None for fewer than
  ``MIN_DOSES`` values of p."""
  runs = [r for r in rows if all(r[k] == v for k, v in setting.items())
          and r["policy"] == "mention"]
  if len({r["mention_prob"] for r in runs}) < MIN_DOSES:      # too few doses to fit a curve
    return None
  return {"setting": setting, **dose_fit.fit(runs, cfg.batch_size)}


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
                 "seen\n\nFit (`experiments.contrastive_dose_fit`): accuracy = floor + (top - "
                 "floor) sigmoid(slope (log10(1 + dose) - mid)) over the setting's converged runs "
                 "(final loss within "
                 f"{dose_fit.TOL} nats of the car-only floor).\n\n" + "\n".join(
                     f"- {_setting_name(d['setting'])}: {dose_fit.fit_line(d)}" for d in doses)
                 + "\n")
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
  layers = LAYERS
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
      for layer in LAYERS:
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
    dose_grid = np.logspace(0, math.log10(max(r["exposures"] for r in rows) + 1), 200)
    ax.plot(dose_grid, dose_response.curve(dose_grid - 1, **d["fit"]), "-", lw=1.5,
            label=f"fit {setting['loss']} d{setting['embed_dim']}")
  ax.axhline(dose_fit.LEVEL, color="grey", ls="--", lw=0.8)
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
    report.plot_loss_curves(w, [(r.name, r.seed) for r in grid(cfg)])

  workdir.publish(results, markdown, figures)
  return markdown
