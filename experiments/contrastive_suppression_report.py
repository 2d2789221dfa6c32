"""The suppression study's report: the pre-registered endpoint, its decision, the Holm-corrected family.

Pre-registration (fixed before any run of this study; the default flagfile's header states the same):

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

from experiments import config
from experiments import report
from experiments.report import detectable_effect, power  # noqa: F401  (the page's power analysis)
from experiments import workdir as workdir_lib
from experiments.caption_towers import LAYERS
from experiments.contrastive_suppression_config import Arm

PRIMARY = Arm(start="p1", lamp_size=2, weight_decay=0.2, temperature="learned").fields()
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
    out["power_at_measured_sd"] = power(EFFECT, d["sd"], d["n"])
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
    for layer in LAYERS:
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


def pm(vals) -> str:
  """Mean ± 95% t-interval of ``vals`` ('-' for none)."""
  if not vals:
    return "-"
  mean, _, ci = report.mean_sd_ci(vals)
  return f"{mean:.3f}" if len(vals) < 2 else f"{mean:.3f} ± {ci:.3f}"


def signed(d: dict) -> str:
  """A paired difference's signed mean ± its 95% interval."""
  return f"{d['mean']:+.3f}" if d["n"] < 2 else f"{d['mean']:+.3f} ± {d['ci']:.3f}"


def primary_markdown(prim: dict) -> str:
  if not prim["present"]:
    return ("The pre-registered primary arm (" + arm_label(PRIMARY) + ") is not in this grid; "
            "its endpoint is read from the default flagfile's run.")
  lines = [report.markdown_table(
      ["arm", "seeds", "start", "p0 - p1 (95%)", "p", "decision", "sd", "seeds for 0.05",
       "detectable at 80%"],
      [[arm_label(prim["arm"]), prim["n"], f"{prim['start']:.3f}", signed(prim),
        f"{prim['p']:.3g}", f"**{prim['decision']}**", f"{prim['sd']:.3f}",
        prim.get("seeds_needed_at_measured_sd", "-"),
        f"{prim.get('detectable_effect', float('nan')):.3f}"]])]
  lines.append(f"\nPlanned: {prim['planned_seeds']} seeds from the prior sd {prim['prior_sd']:.3f} "
               f"for an effect of {prim['effect']}; per-seed differences: "
               + ", ".join(f"{d:+.3f}" for d in prim["diffs"]) + ".")
  fs, hold = prim["from_start"], prim["post_hoc_holding"]
  lines.append(f"\nSecondary (in the Holm family): p = 0 continuation minus its start, "
               f"{signed(fs)} (p = {fs['p']:.3g}; rule: {fs['decision']}).")
  if hold["seeds"]:
    lines.append(f"\nPost hoc, not pre-registered: over the {len(hold['seeds'])} seeds whose start "
                 f"holds the light (probe >= {HOLDS}), p0 - p1 = {signed(hold)} "
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
                    pm(values(st, key)), pm(values(p0, key)), pm(values(p1, key)),
                    signed(d) if d else "-", holm_text])
  return report.markdown_table(["arm", "embedding probe", "start", "p = 0 cont.", "p = 1 cont.",
                                "p0 - p1 (95%)", "Holm p"], out)


def trace_table(rows, starts, layer: str = "embedding", attr: str = "light") -> str:
  out = []
  for arm in arms_of(rows):
    st = _starts(starts, arm)
    steps = sorted({int(k) for r in rows for k in r["trace"]})
    for p in (0.0, 1.0):
      got = _rows(rows, arm, p)
      cells = [pm(values(st, f"probe/{layer}/{attr}"))]
      cells += [pm([r["trace"][str(t)]["probe"][layer][attr] for r in got.values()])
                for t in steps]
      out.append([arm_label(arm), f"{p:g}"] + cells)
  return report.markdown_table(["arm", "p", "start"] + [f"step {t}" for t in steps], out)


def sensitivity_table(rows, starts) -> str:
  out = []
  for arm in arms_of(rows):
    for who, by_seed in (("start", _starts(starts, arm)), ("p = 0", _rows(rows, arm, 0.0)),
                         ("p = 1", _rows(rows, arm, 1.0))):
      out.append([arm_label(arm), who] + [
          pm(values(by_seed, f"{part}/embedding/{attr}"))
          for attr in ("light", "car_color") for part in ("sens_num", "sens_den", "sensitivity")])
  head = [f"{a} {p}" for a in ("light", "car") for p in ("num.", "den.", "ratio")]
  return report.markdown_table(["arm", "tower"] + head, out)


def zero_shot_table(rows, starts) -> str:
  out = []
  for arm in arms_of(rows):
    for who, by_seed in (("start", _starts(starts, arm)), ("p = 0", _rows(rows, arm, 0.0)),
                         ("p = 1", _rows(rows, arm, 1.0))):
      light = values(by_seed, "zero_shot/light")
      out.append([arm_label(arm), who, pm(values(by_seed, "zero_shot/car_color")),
                  pm(light) if light else "not testable (no light words in its captions)"])
  return report.markdown_table(["arm", "tower", "zero-shot car (3 colours)", "zero-shot light"],
                               out)


def family_markdown(fam: dict) -> str:
  survivors = [k for k, v in fam.items() if v["survives"]]
  rows = [[k, v["n"], signed(v), f"± {v.get('ci_holm', float('nan')):.3f}", f"{v['p']:.3g}",
           f"{v['p_holm']:.3g}", "yes" if v["survives"] else ""] for k, v in fam.items()]
  return (f"{len(fam)} secondary endpoints, Holm-Bonferroni at {ALPHA}: **{len(survivors)} "
          "survive**.\n\n" + report.markdown_table(
              ["endpoint", "n", "mean ± 95%", "interval at its Holm step", "p", "Holm p",
               "survives"], rows))


def header(cfg: dict) -> str:
  """The setting of a results.json (its ``config``: ``config.identity`` of the run)."""
  return (f"Seeds {seed_text(cfg['seeds'])}; CLIP, dim {cfg['embed_dim']}, batch {cfg['batch_size']}, "
          f"{cfg['num_train']} training scenes without red cars; p1 start: {cfg['start_steps']} "
          f"steps (Adam, p = 1); continuations: {cfg['continue_steps']} steps, p = 0 and p = 1 on "
          f"identical image batches, peak rate {cfg['learning_rate']:g}. Ridge probes (LOO-chosen "
          f"regularisation) and an MLP probe (3-fold CV) on {cfg['num_probe']} held-out scenes, "
          f"tested on {cfg['num_probe']} more; {cfg['num_pairs']} counterfactual pairs per "
          "attribute. Mean ± 95% t-interval over seeds; paired differences by seed.")


def seed_text(seeds) -> str:
  """``0-11 (12)`` for a run of consecutive seeds, else the list."""
  seeds = list(seeds)
  if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
    return f"{seeds[0]}-{seeds[-1]} ({len(seeds)})"
  return str(seeds)


def results_markdown(results: dict) -> str:
  rows, starts = results["rows"], results["starts"]
  return "\n\n".join([
      "# Is the light suppressed when captions stop naming it?", header(results["config"]),
      "## Primary endpoint (pre-registered)", primary_markdown(results["primary"]),
      "## The embedding per arm", arm_table(rows, starts, results["family"]),
      "## Embedding light probe through the continuation", trace_table(rows, starts),
      "## Sensitivity of the embedding: numerator, denominator, ratio",
      sensitivity_table(rows, starts),
      "## Zero-shot", zero_shot_table(rows, starts),
      "## Secondary family (Holm-Bonferroni)", family_markdown(results["family"])]) + "\n"


def describe_start(row: dict) -> str:
  """The progress line's summary of a start row."""
  return f"embedding light {row['probe']['embedding']['light']:.3f}"


def describe(row: dict) -> str:
  """The progress line's summary of a continuation row."""
  return (f"embedding light {row['probe']['embedding']['light']:.3f}, MLP "
          f"{row['mlp_probe']['embedding']['light']:.3f}")


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
  results = {"study": "contrastive_suppression", "config": config.identity(cfg), "rows": rows,
             "starts": starts, "primary": primary(rows, starts), "family": family(rows, starts),
             "preregistration": {"primary_arm": PRIMARY, "effect": EFFECT, "alpha": ALPHA,
                                 "prior_sd": PRIOR_SD, "planned_seeds": PLANNED_SEEDS}}
  markdown = results_markdown(results)
  workdir.publish(results, markdown, lambda w: plot_trace(w, rows, starts))
  return markdown


# -- the generated write-up (docs/studies/contrastive_suppression.md) ------------------------------
PRIMARY_RESULTS = "contrastive_suppression_traced"    # the default run, also probed at step 200
GRIDS = {"contrastive_suppression_optim": "Weight decay as a factor",
         "contrastive_suppression_temperature": "Temperature as a factor",
         "contrastive_suppression_lamps": "Random towers with 2, 4 and 6 px lamps"}
LOSSES_RESULTS = "contrastive_losses_fair"        # quoted: the loss as a factor
DEFAULT_RESULTS = "contrastive_suppression_default"   # the default rerun (fused loss, grain order)
RESULTS = [PRIMARY_RESULTS, *GRIDS, DEFAULT_RESULTS]
NOT_REMOVAL = "not a removal test (the p = 1 control learns from a random start)"


def decisions_table(res: dict) -> str:
  """Per arm of a grid: the start, p0 - p1 and p0 - start, each with the pre-registered rule's
  reading and its Holm-adjusted p (the primary arm's p0 - p1 is the primary endpoint, outside the
  family). A start whose light probe is below chance + 0.05 reads "never learned" for "kept"."""
  rows, starts, fam = res["rows"], res["starts"], res["family"]
  out = []
  for arm in arms_of(rows):
    label, start = arm_label(arm), values(_starts(starts, arm), "probe/embedding/light")
    holds = bool(start) and float(np.mean(start)) >= CHANCE + EFFECT
    cells = [label, len(start), pm(start)]
    for what, diffs in (("p0 - p1", contrast(rows, arm, "probe/embedding/light")),
                        ("p0 - start", from_start(rows, starts, arm, "probe/embedding/light"))):
      d = report.paired_t(diffs)
      holm = fam.get(f"{label}: embedding light probe {what}")
      marker = ("primary" if holm is None and arm == PRIMARY else "-" if holm is None else
                f"{holm['p_holm']:.3g}" + (" (survives)" if holm["survives"] else ""))
      removal = what == "p0 - start" or arm["start"] == "p1"
      cells += [signed(d), decide(d, holds) if removal else NOT_REMOVAL, marker]
    out.append(cells)
  return report.markdown_table(["arm", "seeds", "start light", "p0 - p1 (95%)", "rule", "Holm p",
                                "p0 - start (95%)", "rule", "Holm p"], out)


def versus_primary(res: dict) -> str:
  """Each other arm's p = 0 continuation minus the primary arm's, embedding light, paired by seed
  (did the factor change what p = 0 leaves?)."""
  out = []
  for arm in arms_of(res["rows"]):
    if arm == PRIMARY:
      continue
    a, b = _rows(res["rows"], arm, 0.0), _rows(res["rows"], PRIMARY, 0.0)
    diffs = [a[s]["probe"]["embedding"]["light"] - b[s]["probe"]["embedding"]["light"]
             for s in sorted(set(a) & set(b))]
    if len(diffs) > 1:
      d = report.paired_t(diffs)
      out.append(f"p = 0 continuation, {arm_label(arm)} minus the primary arm (embedding light, "
                 f"paired by seed, not in the Holm family): {signed(d)} (p = {d['p']:.3g}).")
  return " ".join(out)


def reading(results: dict[str, dict]) -> str:
  """What the saved intervals say, one line per question, from the rule and the Holm family."""
  prim = results[PRIMARY_RESULTS]["primary"]
  out = [f"* Primary (pre-registered): **{prim['decision']}**, p0 - p1 = {signed(prim)} over "
         f"{prim['n']} seeds; its power for 0.05 at the measured sd is "
         f"{100 * prim['power_at_measured_sd']:.0f}%, not the planned 80%."]
  for name in ("contrastive_suppression_optim", "contrastive_suppression_temperature"):
    text = versus_primary(results[name])
    if text:
      out.append(f"* {GRIDS[name]}: {text} Each arm's own p0 - p1 is in the table above.")
  lamps = results["contrastive_suppression_lamps"]
  for arm in arms_of(lamps["rows"]):
    start = values(_starts(lamps["starts"], arm), "probe/embedding/light")
    d = report.paired_t(from_start(lamps["rows"], lamps["starts"], arm, "probe/embedding/light"))
    holm = lamps["family"].get(f"{arm_label(arm)}: embedding light probe p0 - start")
    survives = holm is not None and holm["survives"]
    out.append(f"* Random tower, {arm['lamp_size']} px lamp (start {pm(start)}): p = 0 minus "
               f"start {signed(d)}, rule: {decide(d, float(np.mean(start)) >= CHANCE + EFFECT)}"
               f"; {'survives' if survives else 'does not survive'} Holm-Bonferroni.")
  return "\n".join(out)


def _weak_starts(res: dict) -> str:
  """A note on primary seeds whose start had not learned the light (probe below ``HOLDS``)."""
  begin = _starts(res["starts"], PRIMARY)
  weak = sorted(s for s, r in begin.items() if _get(r, "probe/embedding/light") < HOLDS)
  if not weak:
    return ""
  p0, p1 = _rows(res["rows"], PRIMARY, 0.0), _rows(res["rows"], PRIMARY, 1.0)
  light = lambda r: r["probe"]["embedding"]["light"]
  return (" Seeds whose p = 1 start had not learned the light (start probe < "
          f"{HOLDS}): " + ", ".join(
              f"seed {s} (start {light(begin[s]):.3f}"
              + (f", p0 - p1 {light(p0[s]) - light(p1[s]):+.3f}" if s in p0 and s in p1 else "")
              + ")" for s in weak)
          + "; there the p = 1 control goes on learning the light, so p0 - p1 < 0 without "
          "anything being removed (the post-hoc line above leaves them out).")


def _survivors(fam: dict) -> str:
  names = [k for k, v in fam.items() if v["survives"]]
  return (f"{len(names)} of {len(fam)} secondary endpoints survive Holm-Bonferroni"
          + (": " + "; ".join(f"{k} ({signed(fam[k])})" for k in names) if names else "") + ".")


def document(results: dict[str, dict]) -> str:
  """docs/studies/contrastive_suppression.md from the default run and the three grids."""
  res = results[PRIMARY_RESULTS]
  prim, pre = res["primary"], res["preregistration"]
  ratio = prim["sd"] / pre["prior_sd"]
  lines = [
      "# Is the light suppressed when captions stop naming it?",
      "A CLIP-style dual encoder pulls scenes with identical captions to one point, so what the "
      "captions never mention should leave the image embedding. \"Never learned\" and "
      "\"removed\" are different claims: removal needs a tower that holds the light first. This "
      "study starts from towers that hold it (a tower trained on captions that always name the "
      "light, p = 1; or the random tower with 4 and 6 px lamps) and continues each on captions "
      "that never name it (p = 0) and, as the control, on captions that always do (p = 1): same "
      "start, identical image batches, same optimizer and step count. Scenes with a red car are "
      "dropped everywhere, so car colours (black, blue, white) and lamp colours (red, green) "
      "share no word and no pixel colour.",
      "## Run it",
      "    python -m experiments.contrastive_suppression --flagfile=experiments/configs/"
      "contrastive_suppression.flags            # the pre-registered primary test (the default)\n"
      + "".join(f"    python -m experiments.contrastive_suppression --flagfile=experiments/configs/"
                f"{name}.flags\n" for name in RESULTS)
      + "    python -m experiments.contrastive_suppression --flagfile=experiments/configs/"
      "contrastive_suppression_smoke.flags      # tiny, seconds (CI)",
      "Measured wall and CPU times, load and machine: " + ", ".join(
          f"`docs/results/{name}/RUN.md`" for name in RESULTS) + ".",
      "## Pre-registration",
      f"Fixed before the first run (the default flagfile's header and "
      f"`experiments/contrastive_suppression_report.py` hold the same constants). **Primary "
      f"endpoint**: in the arm {arm_label(pre['primary_arm'])}, the embedding's ridge light probe "
      f"after the continuation, p = 0 minus its p = 1 control, paired by seed, two-sided 95% "
      f"t-interval. **Decision**: interval below 0 -> \"suppressed\"; inside "
      f"(-{pre['effect']}, +{pre['effect']}) -> \"kept\" (\"never learned\" where the start "
      f"did not hold the light); otherwise \"not decided at this power\". **Seeds**: "
      f"{pre['planned_seeds']}, the smallest n with 80% power (paired t, alpha {pre['alpha']}) "
      f"for an effect of {pre['effect']} at sd {pre['prior_sd']}, the measured sd over 5 seeds "
      f"of the closest saved paired difference (docs/results/contrastive_default). **Secondary "
      f"family**, Holm-Bonferroni at alpha {pre['alpha']}: every layer x {{light, pedestrian, "
      f"clouds}} p0 - p1, and on the embedding the MLP light probe, the sensitivity's numerator "
      f"and denominator, and the light probe's change from the start.",
      "## Primary result",
      f"Saved from the default run with every layer also probed at continuation step 200 "
      f"(`{PRIMARY_RESULTS}.flags`, probe steps {res['config']['probe_steps']}): the training, "
      f"seeds and endpoint are the default's. " + header(res["config"]), primary_markdown(prim),
      f"Decision: **{prim['decision']}** (p0 - p1 = {signed(prim)} over {prim['n']} seeds). The "
      f"measured sd of the per-seed differences, {prim['sd']:.3f}, is {ratio:.1f}x the planned "
      f"{pre['prior_sd']}: at it, {prim['n']} seeds have "
      f"{100 * prim['power_at_measured_sd']:.0f}% power for an effect of {pre['effect']} "
      f"({prim['seeds_needed_at_measured_sd']} seeds would give 80%), and the smallest effect "
      f"they detect with 80% power is {prim['detectable_effect']:.3f}. "
      + ("The interval excludes 0, so the pre-registered decision holds even at this power; the "
         f"effect's size is known only to within ± {prim['ci']:.3f}." if prim["decision"] ==
         "suppressed" else "This is the reading the rule gives at this power.")
      + _weak_starts(res)
      + (f" The default run itself (`{DEFAULT_RESULTS}`, trained with the library's fused CLIP "
         f"loss and grain's index-shuffle batch order, so each tower sees other batches and ends "
         f"at a different point): p0 - p1 = "
         f"{signed(results[DEFAULT_RESULTS]['primary'])} over "
         f"{results[DEFAULT_RESULTS]['primary']['n']} seeds, "
         f"{results[DEFAULT_RESULTS]['primary']['decision']}."
         if results.get(DEFAULT_RESULTS, {}).get("primary", {}).get("present") else ""),
      "## Secondary endpoints of the primary run (Holm-Bonferroni)",
      family_markdown(res["family"]),
      "## The embedding of the primary run", arm_table(res["rows"], res["starts"], res["family"]),
      "### Through the continuation", trace_table(res["rows"], res["starts"]),
      "### Sensitivity: numerator, denominator, ratio",
      sensitivity_table(res["rows"], res["starts"]),
      "### Zero-shot (light only where its words occurred in the tower's captions)",
      zero_shot_table(res["rows"], res["starts"])]
  for name, title in GRIDS.items():
    grid = results[name]
    lines += [f"## {title}", header(grid["config"]), decisions_table(grid)]
    lines += [versus_primary(grid)] if versus_primary(grid) else []
    lines += [_survivors(grid["family"])]
  losses = results[LOSSES_RESULTS]["comparison"].get("light")
  lines += ["## Reading", reading(results), "## SigLIP against CLIP",
            "The loss as a factor (each loss at its own validated learning rate, SigLIP's bias "
            "set for the batch, towers trained from random init on p = 1 captions) is its own "
            "study, `docs/studies/contrastive_losses.md`"
            + (f": CLIP minus SigLIP in the embedding's light probe {signed(losses)} over "
               f"{losses['n']} seeds ({losses['reading']}; read it with that page's equal-budget "
               "caveat)." if losses else ".")]
  return "\n\n".join(lines) + "\n"
