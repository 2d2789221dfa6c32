"""The third edition's report: the pre-registered endpoint, its decision, the Holm-corrected family.

Pre-registration (fixed before any run of this study; README states the same):

* **Primary endpoint**: in the arm ``PRIMARY`` (the p = 1 tower, 2 px lamp, continued with AdamW,
  weight decay 0.2, learned temperature), the embedding's light probe (ridge) after the
  continuation, p = 0 continuation minus its p = 1 control, paired by seed; mean and two-sided 95%
  t-interval.
* **Decision rule** (``decide``), with ``EFFECT`` = 0.05 the smallest effect of interest:
  "suppressed" if the interval lies below 0; "kept" (no suppression of 0.05 or more) if it lies
  inside (-0.05, +0.05); otherwise "not decided at this power". For a start that did not hold the
  light (start probe below chance + 0.05), the continuation's change from its start decides
  "never learned" (inside +-0.05) instead of "kept".
* **Seeds**: ``PLANNED_SEEDS`` = ``report.seeds_for_power(PRIOR_SD, EFFECT)`` (80% power, two-sided
  alpha 0.05), ``PRIOR_SD`` the measured sd over 5 seeds of the closest saved paired difference
  (docs/results/contrastive_default: per seed, p = 0 minus p = 1 embedding light probe). The
  report restates the power from this run's own sd.
* **Secondary family** (Holm-Bonferroni, alpha 0.05, ``family``): for every arm, every layer x
  {light, pedestrian, clouds} p0 - p1 at the end; and per arm, on the embedding: the light's MLP
  probe p0 - p1, the light's sensitivity numerator and denominator p0 - p1, the ridge light probe p0
  minus the start. The primary endpoint is not in it. Car colour is reported, not tested.
"""
from __future__ import annotations

import math

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib

PRIMARY = dict(start="p1", lamp_size=2, weight_decay=0.2, temperature="learned")
EFFECT = 0.05
ALPHA = 0.05
PRIOR_SD = 0.0550          # docs/results/contrastive_default: sd of (p0 - p1) embedding light, 5 seeds
PLANNED_SEEDS = 12         # report.seeds_for_power(PRIOR_SD, EFFECT) (tested)
ATTRS = ("light", "pedestrian", "clouds")
ALL_ATTRS = ("car_color",) + ATTRS
ARM = ("start", "lamp_size", "weight_decay", "temperature")
CHANCE = 0.5
HOLDS = 0.9    # post hoc (not pre-registered): a start "holds" the light if its probe is >= this


def arm_label(arm: dict) -> str:
  return (f"{arm['start']} start, lamp {arm['lamp_size']}, wd {arm['weight_decay']:g}, "
          f"{arm['temperature']} temperature")


def _get(row: dict, key: str):
  node = row
  for part in key.split("/"):
    if node is None or part not in node:
      return None
    node = node[part]
  return node


def arms_of(rows) -> list[dict]:
  seen = {tuple(r[k] for k in ARM): {k: r[k] for k in ARM} for r in rows}
  return [seen[k] for k in sorted(seen)]


def _rows(rows, arm, p) -> dict[int, dict]:
  return {r["seed"]: r for r in rows if r["p"] == p and all(r[k] == v for k, v in arm.items())}


def _starts(starts, arm) -> dict[int, dict]:
  return {s["seed"]: s for s in starts
          if s["start"] == arm["start"] and s["lamp_size"] == arm["lamp_size"]}


def contrast(rows, arm, key: str) -> list[float]:
  """Per seed: ``key`` of the p = 0 continuation minus its p = 1 control (same start, batches)."""
  p0, p1 = _rows(rows, arm, 0.0), _rows(rows, arm, 1.0)
  return [_get(p0[s], key) - _get(p1[s], key) for s in sorted(set(p0) & set(p1))
          if _get(p0[s], key) is not None and _get(p1[s], key) is not None]


def from_start(rows, starts, arm, key: str, p: float = 0.0) -> list[float]:
  """Per seed: ``key`` of the p continuation minus the same tower at its start."""
  cont, begin = _rows(rows, arm, p), _starts(starts, arm)
  return [_get(cont[s], key) - _get(begin[s], key) for s in sorted(set(cont) & set(begin))]


def values(rows_by_seed: dict, key: str) -> list[float]:
  return [_get(r, key) for _, r in sorted(rows_by_seed.items()) if _get(r, key) is not None]


def decide(d: dict, start_holds: bool = True) -> str:
  """The pre-registered reading of a paired difference (``report.paired_t``'s dict)."""
  if d["n"] < 2 or not math.isfinite(d["ci"]):
    return "not decided at this power"
  lo, hi = d["mean"] - d["ci"], d["mean"] + d["ci"]
  if hi < 0:
    return "suppressed"
  if -EFFECT < lo and hi < EFFECT:
    return "kept" if start_holds else "never learned"
  return "not decided at this power"


def detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
  """The smallest true effect a paired t-test on ``n`` seeds with this ``sd`` detects with
  ``power`` (bisection on ``report.seeds_for_power``'s criterion)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if n < 2 or not sd > 0:
    return float("nan")
  crit = stats.t.ppf(1 - alpha / 2, n - 1)
  got = lambda e: (stats.nct.sf(crit, n - 1, e / sd * math.sqrt(n))
                   + stats.nct.cdf(-crit, n - 1, e / sd * math.sqrt(n)))
  lo, hi = 0.0, sd
  while not got(hi) >= power:                    # grow the bracket (nct is nan for huge shifts)
    lo, hi = hi, 2 * hi
  for _ in range(50):
    mid = (lo + hi) / 2
    lo, hi = (lo, mid) if got(mid) >= power else (mid, hi)
  return hi


def primary(rows, starts) -> dict:
  """The pre-registered endpoint, its decision and the power this run's own sd gives."""
  arm = next((a for a in arms_of(rows) if a == PRIMARY), None)
  if arm is None:
    return {"present": False}
  diffs = contrast(rows, arm, "probe/embedding/light")
  d = report.paired_t(diffs)
  start_vals = values(_starts(starts, arm), "probe/embedding/light")
  out = {"present": True, "arm": arm, "diffs": diffs, **d, "decision": decide(d),
         "start": float(np.mean(start_vals)), "planned_seeds": PLANNED_SEEDS,
         "prior_sd": PRIOR_SD, "effect": EFFECT}
  if d["n"] >= 2 and d["sd"] > 0:
    out["seeds_needed_at_measured_sd"] = report.seeds_for_power(d["sd"], EFFECT)
    out["detectable_effect"] = detectable_effect(d["sd"], d["n"])
  out["from_start"] = report.paired_t(from_start(rows, starts, arm, "probe/embedding/light"))
  out["from_start"]["decision"] = decide(out["from_start"])
  out["post_hoc_holding"] = holding(rows, starts, arm)
  return out


def holding(rows, starts, arm) -> dict:
  """Post hoc, not pre-registered: the primary contrast over the seeds whose start holds the
  light (embedding probe >= HOLDS). Where a start has not learned the light, its p = 1 control
  goes on learning it and p0 - p1 < 0 without anything being removed."""
  begin = _starts(starts, arm)
  keep = sorted(s for s, r in begin.items() if _get(r, "probe/embedding/light") >= HOLDS)
  p0, p1 = _rows(rows, arm, 0.0), _rows(rows, arm, 1.0)
  diffs = [p0[s]["probe"]["embedding"]["light"] - p1[s]["probe"]["embedding"]["light"]
           for s in keep if s in p0 and s in p1]
  if not diffs:
    return {"seeds": []}
  d = report.paired_t(diffs)
  return {"seeds": keep, **d, "decision": decide(d)}


def family(rows, starts) -> dict[str, dict]:
  """The secondary endpoints, Holm-corrected together (see module doc)."""
  diffs = {}
  for arm in arms_of(rows):
    label = arm_label(arm)
    for layer in _layers():
      for attr in ATTRS:
        if arm == PRIMARY and (layer, attr) == ("embedding", "light"):
          continue                                       # the primary endpoint
        diffs[f"{label}: {layer} {attr} probe p0 - p1"] = contrast(
            rows, arm, f"probe/{layer}/{attr}")
    diffs[f"{label}: embedding light MLP probe p0 - p1"] = contrast(
        rows, arm, "mlp_probe/embedding/light")
    for part in ("sens_num", "sens_den"):
      diffs[f"{label}: embedding light {part} p0 - p1"] = contrast(
          rows, arm, f"{part}/embedding/light")
    diffs[f"{label}: embedding light probe p0 - start"] = from_start(
        rows, starts, arm, "probe/embedding/light")
  return report.holm_family({k: v for k, v in diffs.items() if v}, ALPHA)


def _layers() -> list[str]:
  from experiments.contrastive_suppression import LAYERS  # pylint: disable=import-outside-toplevel
  return list(LAYERS)


def _pm(vals) -> str:
  if not vals:
    return "-"
  mean, _, ci = report.mean_sd_ci(vals)
  return f"{mean:.3f}" if len(vals) < 2 else f"{mean:.3f} ± {ci:.3f}"


def _signed(d: dict) -> str:
  return f"{d['mean']:+.3f}" if d["n"] < 2 else f"{d['mean']:+.3f} ± {d['ci']:.3f}"


def primary_markdown(prim: dict) -> str:
  if not prim["present"]:
    return ("The pre-registered primary arm (" + arm_label(PRIMARY) + ") is not in this grid; "
            "its endpoint is read from the default flagfile's run.")
  lines = [report.markdown_table(
      ["arm", "seeds", "start", "p0 - p1 (95%)", "p", "decision", "sd", "seeds for 0.05",
       "detectable at 80%"],
      [[arm_label(prim["arm"]), prim["n"], f"{prim['start']:.3f}", _signed(prim),
        f"{prim['p']:.3g}", f"**{prim['decision']}**", f"{prim['sd']:.3f}",
        prim.get("seeds_needed_at_measured_sd", "-"),
        f"{prim.get('detectable_effect', float('nan')):.3f}"]])]
  lines.append(f"\nPlanned: {prim['planned_seeds']} seeds from the prior sd {prim['prior_sd']:.3f} "
               f"for an effect of {prim['effect']}; per-seed differences: "
               + ", ".join(f"{d:+.3f}" for d in prim["diffs"]) + ".")
  fs, hold = prim["from_start"], prim["post_hoc_holding"]
  lines.append(f"\nSecondary (in the Holm family): p = 0 continuation minus its start, "
               f"{_signed(fs)} (p = {fs['p']:.3g}; rule: {fs['decision']}).")
  if hold["seeds"]:
    lines.append(f"\nPost hoc, not pre-registered: over the {len(hold['seeds'])} seeds whose start "
                 f"holds the light (probe >= {HOLDS}), p0 - p1 = {_signed(hold)} "
                 f"(rule: {hold['decision']}).")
  return "\n".join(lines)


def arm_table(rows, starts, fam) -> str:
  """Per arm: the embedding's probes at the start and after each continuation, p0 - p1 paired."""
  out = []
  for arm in arms_of(rows):
    p0, p1, st = _rows(rows, arm, 0.0), _rows(rows, arm, 1.0), _starts(starts, arm)
    for probe, attrs in (("probe", ALL_ATTRS), ("mlp_probe", ALL_ATTRS)):
      for attr in attrs:
        key = f"{probe}/embedding/{attr}"
        d = report.paired_t(contrast(rows, arm, key)) if contrast(rows, arm, key) else None
        kind = "MLP probe" if probe == "mlp_probe" else "probe"
        name = f"{arm_label(arm)}: embedding {attr} {kind} p0 - p1"
        holm = fam.get(name)
        holm_text = ("primary" if arm == PRIMARY and key == "probe/embedding/light" else
                     "-" if holm is None else
                     f"{holm['p_holm']:.3g}{' (survives)' if holm['survives'] else ''}")
        out.append([arm_label(arm), f"{'MLP' if probe == 'mlp_probe' else 'ridge'} {attr}",
                    _pm(values(st, key)), _pm(values(p0, key)), _pm(values(p1, key)),
                    _signed(d) if d else "-", holm_text])
  return report.markdown_table(["arm", "embedding probe", "start", "p = 0 cont.", "p = 1 cont.",
                                "p0 - p1 (95%)", "Holm p"], out)


def trace_table(rows, starts, layer: str = "embedding", attr: str = "light") -> str:
  out = []
  for arm in arms_of(rows):
    st = _starts(starts, arm)
    steps = sorted({int(k) for r in rows for k in r["trace"]})
    for p in (0.0, 1.0):
      got = _rows(rows, arm, p)
      cells = [_pm(values(st, f"probe/{layer}/{attr}"))]
      cells += [_pm([r["trace"][str(t)]["probe"][layer][attr] for r in got.values()])
                for t in steps]
      out.append([arm_label(arm), f"{p:g}"] + cells)
  return report.markdown_table(["arm", "p", "start"] + [f"step {t}" for t in steps], out)


def sensitivity_table(rows, starts) -> str:
  out = []
  for arm in arms_of(rows):
    for who, by_seed in (("start", _starts(starts, arm)), ("p = 0", _rows(rows, arm, 0.0)),
                         ("p = 1", _rows(rows, arm, 1.0))):
      out.append([arm_label(arm), who] + [
          _pm(values(by_seed, f"{part}/embedding/{attr}"))
          for attr in ("light", "car_color") for part in ("sens_num", "sens_den", "sensitivity")])
  head = [f"{a} {p}" for a in ("light", "car") for p in ("num.", "den.", "ratio")]
  return report.markdown_table(["arm", "tower"] + head, out)


def zero_shot_table(rows, starts) -> str:
  out = []
  for arm in arms_of(rows):
    for who, by_seed in (("start", _starts(starts, arm)), ("p = 0", _rows(rows, arm, 0.0)),
                         ("p = 1", _rows(rows, arm, 1.0))):
      light = values(by_seed, "zero_shot/light")
      out.append([arm_label(arm), who, _pm(values(by_seed, "zero_shot/car_color")),
                  _pm(light) if light else "not testable (no light words in its captions)"])
  return report.markdown_table(["arm", "tower", "zero-shot car (3 colours)", "zero-shot light"],
                               out)


def family_markdown(fam: dict) -> str:
  survivors = [k for k, v in fam.items() if v["survives"]]
  rows = [[k, v["n"], _signed(v), f"± {v.get('ci_holm', float('nan')):.3f}", f"{v['p']:.3g}",
           f"{v['p_holm']:.3g}", "yes" if v["survives"] else ""] for k, v in fam.items()]
  return (f"{len(fam)} secondary endpoints, Holm-Bonferroni at {ALPHA}: **{len(survivors)} "
          "survive**.\n\n" + report.markdown_table(
              ["endpoint", "n", "mean ± 95%", "interval at its Holm step", "p", "Holm p",
               "survives"], rows))


def results_markdown(cfg, results: dict) -> str:
  rows, starts = results["rows"], results["starts"]
  return "\n\n".join([
      "# Caption study, third edition: is the light suppressed when captions stop naming it?",
      f"Seeds {list(cfg.seeds)}; CLIP, dim {cfg.embed_dim}, batch {cfg.batch_size}, "
      f"{cfg.num_train} training scenes without red cars; p1 start: {cfg.start_steps} steps (Adam, "
      f"p = 1); continuations: {cfg.continue_steps} steps, p = 0 and p = 1 on identical image "
      f"batches. Ridge probes (LOO-chosen regularisation) and an MLP probe (3-fold CV) on "
      f"{cfg.num_probe} held-out scenes, tested on {cfg.num_probe} more. Mean ± 95% t-interval "
      "over seeds; paired differences by seed.",
      "## Primary endpoint (pre-registered)", primary_markdown(results["primary"]),
      "## The embedding per arm", arm_table(rows, starts, results["family"]),
      "## Embedding light probe through the continuation", trace_table(rows, starts),
      "## Sensitivity of the embedding: numerator, denominator, ratio",
      sensitivity_table(rows, starts),
      "## Zero-shot", zero_shot_table(rows, starts),
      "## Secondary family (Holm-Bonferroni)", family_markdown(results["family"])]) + "\n"


def plot_trace(workdir: workdir_lib.Workdir, rows, starts) -> None:
  plt = report.pyplot()
  arms = arms_of(rows)
  fig, axes = plt.subplots(1, len(arms), figsize=(4 * len(arms), 3.2), squeeze=False)
  for ax, arm in zip(axes[0], arms):
    st = np.mean(values(_starts(starts, arm), "probe/embedding/light"))
    steps = sorted({int(k) for r in rows for k in r["trace"]})
    for p, colour in ((0.0, "tab:red"), (1.0, "tab:blue")):
      got = list(_rows(rows, arm, p).values())
      means = [st] + [np.mean([r["trace"][str(t)]["probe"]["embedding"]["light"] for r in got])
                      for t in steps]
      ax.plot([0] + steps, means, marker="o", color=colour, label=f"continued on p = {p:g}")
    ax.axhline(CHANCE, color="grey", lw=0.8, ls=":")
    ax.set_title(arm_label(arm), fontsize=8)
    ax.set_xlabel("continuation step")
    ax.set_ylabel("embedding light probe")
    ax.legend(fontsize=7)
  workdir_lib.save_figure(fig, workdir.file("light_continuation.png"))
  plt.close(fig)


def publish(workdir: workdir_lib.Workdir, cfg, rows, starts) -> str:
  results = {"study": "contrastive_suppression", "rows": rows, "starts": starts,
             "primary": primary(rows, starts), "family": family(rows, starts),
             "preregistration": {"primary_arm": PRIMARY, "effect": EFFECT, "alpha": ALPHA,
                                 "prior_sd": PRIOR_SD, "planned_seeds": PLANNED_SEEDS}}
  markdown = results_markdown(cfg, results)
  workdir.publish(results, markdown, lambda w: plot_trace(w, rows, starts))
  return markdown
