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
       "flip rate, other shifts", "batch error (whole batch at once)"],
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
                   f"points out of it, largest per-example error {by[m]['max_error_max_mean']:.1e} "
                   "(mean over seeds), flip "
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


# -- the study's write-up (docs/studies/orbit.md, from the saved runs: experiments.docs) -----------
IN, OUT = "acc_in_support", "acc_out_of_support"
AUG_EVAL = "mlp_aug_full" + ORBIT_EVAL_SUFFIX


def _rows(saved: dict) -> dict:
  """(run name, seed) -> row, with the derived test-time orbit rows."""
  return {(r["model"], r["seed"]): r for r in saved["rows"] + derived_rows(saved["rows"])}


def _diffs(a_rows: dict, a: str, b_rows: dict, b: str, metric: str) -> list[float]:
  """Per-seed ``metric`` of ``a`` minus ``b``, over the seeds both have (paired by seed)."""
  seeds = sorted({s for m, s in a_rows if m == a} & {s for m, s in b_rows if m == b})
  return [a_rows[(a, s)][metric] - b_rows[(b, s)][metric] for s in seeds]


SUPPORT = {IN: "in support", OUT: "out of support"}
ROTATED = {IN: "upright", OUT: "rotated"}


def _family(rows: dict, pairs, names: dict = SUPPORT, other: dict | None = None):
  """``paired_family`` of ``(a, b, metric)`` endpoints, each named ``"a - b, <metric>"``: ``a``'s
  rows in ``rows``, ``b``'s in ``other`` (default: the same run)."""
  return paired_family({f"{a} - {b}, {names[m]}": _diffs(rows, a, rows if other is None else other,
                                                         b, m) for a, b, m in pairs})


def paired_family(endpoints: dict[str, list[float]]) -> tuple[str, dict]:
  """A family of paired endpoints as a table (mean difference, 95% t-interval, the interval at
  its Holm step, Holm-adjusted p, whether it survives) and the statistics by name."""
  stats = report.holm_family(endpoints)
  table = report.markdown_table(
      ["difference (paired by seed)", "seeds", "mean", "95% interval", "Holm interval",
       "p (Holm)", "survives Holm"],
      [[name, s["n"], f"{s['mean']:+.3f}", _interval(s["mean"], s["ci"]),
        _interval(s["mean"], s.get("ci_holm", float("nan"))), f"{s['p_holm']:.3f}",
        "yes" if s["survives"] else "no"] for name, s in stats.items()])
  return table, stats


def _interval(mean: float, half: float) -> str:
  return "-" if not np.isfinite(half) else f"[{mean - half:+.3f}, {mean + half:+.3f}]"


def _say(s: dict) -> str:
  """``+0.012 (95% [-0.010, +0.034], survives Holm)``."""
  verdict = "survives Holm" if s["survives"] else "does not survive Holm"
  return f"{s['mean']:+.3f} (95% {_interval(s['mean'], s['ci'])}; {verdict})"


def _shows(s: dict, sign: int) -> bool:
  """The Holm-corrected reading: the difference has this sign and survives the correction."""
  return s["survives"] and np.sign(s["mean"]) == sign


def _summary_table(saved: dict, models_: list[str] | None = None) -> str:
  rows = saved["rows"] + derived_rows(saved["rows"])
  summary = report.summarize([_flat(r) for r in rows], ["model"], METRICS)
  return report.markdown_table(
      ["model", "params", "acc in support", "acc out of support", "largest per-example error",
       "flip rate", "best / stopped step (range)", "seeds"],
      [[s["model"], f"{s['num_params_mean']:,.0f}", report.pm(s, IN), report.pm(s, OUT),
        _largest_error(saved, s["model"]), report.pm(s, "flip_rate"),
        _step_range(saved, s["model"]), s["n"]]
       for s in summary if models_ is None or s["model"] in models_])


def _largest_error(saved: dict, model: str) -> str:
  errors = [r["invariance"]["max_error_max"] for r in saved["rows"]
            if r["model"] == model and r.get("invariance")]
  return f"{max(errors):.1e}" if errors else "-"


def _step_range(saved: dict, model: str) -> str:
  rows = [r for r in saved["rows"] if r["model"] == model.removesuffix(ORBIT_EVAL_SUFFIX)]
  lo = lambda k: min(r[k] for r in rows)
  hi = lambda k: max(r[k] for r in rows)
  return f"{lo('best_step')}-{hi('best_step')} / {lo('steps_run')}-{hi('steps_run')}"


def _rule(flags: dict) -> str:
  return (f"validation every {flags['eval_every']} steps, stop after {flags['patience']} "
          f"evaluations without a {100 * flags['min_delta']:g}-point gain, cap {flags['steps']:,} "
          "steps")


def _stopped(saved: dict, model: str) -> tuple[int, int, int, int]:
  """(first, last stopping step, runs stopped by the rule before the cap, runs)."""
  rows = [r for r in saved["rows"] if r["model"] == model]
  return (min(r["steps_run"] for r in rows), max(r["steps_run"] for r in rows),
          sum(r["steps_run"] < r["step_cap"] for r in rows), len(rows))


def _intro(flags: dict) -> str:
  side, glyph = flags["canvas"], flags["object_size"]
  return f"""# Orbit study: hard, orbit, augmented and no invariance on curated data

Does an invariance built into the model (a circular ConvNet with global average pooling, an
orbit-averaged MLP) hold where the training data never went, and does one learned from the data
(augmentation) hold as well? {glyph}x{glyph} digits are placed only in the {flags["support"]} half
of a {side}x{side} canvas; each model is tested on held-out digits in that half (in support), in
the other half (out of support), at every placement (maps), and audited over every one of the
{side * side} cyclic shifts (per-example logit error and prediction flips). A second group, C4
rotations, trains upright digits and tests them rotated. Every arm trains under one convergence
rule on a validation split of held-out training digits (the rule is stated with each table).
Intervals are 95% t-intervals over seeds; a seed sets the digit split and placements as well as
the initialisation, so differences are paired by seed. Each table of paired differences is one
family, corrected with Holm-Bonferroni ("survives Holm": adjusted p <= 0.05)."""


_COMMANDS = """## How to run

    python -m experiments.orbit --workdir=workdir/orbit          # the default run (5 seeds)
    python -m experiments.orbit --flagfile=experiments/configs/orbit.flags \\
        --flagfile=experiments/configs/orbit_ablations.flags        # or _flat_matched, _aug_converged
    python -m experiments.orbit --flagfile=experiments/configs/orbit_rotation.flags
    python -m experiments.orbit --flagfile=experiments/configs/orbit_smoke.flags  # seconds (CI)

`OrbitConfig` (experiments/orbit_config.py) holds every parameter and its default; a variant
flagfile holds only what it changes. Each saved run below has a RUN.md in its docs/results
directory with its exact command, machine, load and wall time."""


def _default_section(saved: dict) -> str:
  table, s = _family(_rows(saved), [
      ("orbit_full", "mlp_aug_full", OUT), ("orbit_full", "mlp", OUT), ("cnn_gap", "cnn_flat", OUT),
      ("cnn_flat", "cnn_gap", IN), ("orbit_full", "cnn_gap", IN), ("cnn_aps", "cnn_gap", IN)])
  first, last, early, n = _stopped(saved, "mlp_aug_full")
  size = lambda m: next(r["num_params"] for r in saved["rows"] if r["model"] == m)
  exact = [m for m in ("orbit_full", "cnn_gap", "cnn_aps")
           if any(r["model"] == m for r in saved["rows"])]
  worst = max(r["invariance"]["max_error_max"] for r in saved["rows"] if r["model"] in exact)
  reading = [
      f"The exactly invariant arms ({', '.join(f'`{m}`' for m in exact)}) flip no prediction "
      f"under any of the {saved['flags']['canvas'] ** 2} shifts, with a largest per-example "
      f"logit error of {worst:.1e} over "
      "every audited example and seed (float32 rounding): their accuracy out of support equals "
      "their accuracy in it.",
      "Out of support, the orbit model beats full-group augmentation by "
      f"{_say(s['orbit_full - mlp_aug_full, out of support'])} and the plain MLP by "
      f"{_say(s['orbit_full - mlp, out of support'])}; the circular ConvNet beats the flatten "
      f"ConvNet by {_say(s['cnn_gap - cnn_flat, out of support'])}.",
      f"In support, `cnn_flat` ({size('cnn_flat') / size('cnn_gap'):.1f}x `cnn_gap`'s parameters) "
      "differs from `cnn_gap` by "
      f"{_say(s['cnn_flat - cnn_gap, in support'])}; the parameter-matched control below asks "
      "whether that is its size.",
      f"`mlp_aug_full` stopped at steps {first}-{last} under this rule ({early} of {n} runs "
      "before the cap): the convergence run below trains it until it stops improving."]
  return "\n\n".join([
      "## Default run: translations, 5 seeds",
      f"Rule: {_rule(saved['flags'])}. `{AUG_EVAL}`: `mlp_aug_full`'s parameters averaged over "
      "the whole orbit at test time (no retraining).", _summary_table(saved),
      "Paired differences (one family):", table, " ".join(reading)])


def _ablation_section(saved: dict, matched: dict) -> str:
  rows = _rows(saved)
  ablations = ("cnn_zero_gap", "cnn_circ_flat", "cnn_strided")
  table, s = _family(rows, [(m, "cnn_gap", OUT) for m in ablations]
                     + [("cnn_circ_flat", "cnn_zero_gap", OUT)]
                     + [(m, "cnn_gap", IN) for m in ablations])
  head, pad = s["cnn_circ_flat - cnn_gap, out of support"], s["cnn_zero_gap - cnn_gap, out of support"]
  versus = s["cnn_circ_flat - cnn_zero_gap, out of support"]
  if _shows(head, -1) and _shows(versus, -1):
    verdict = ("the flatten head costs more accuracy out of support than zero padding does: the "
               "head, more than the padding, carries the loss of invariance")
  else:
    verdict = ("these seeds do not separate the head's cost from the padding's after the "
               "correction")
  reading = (f"Out of support, a flatten head on the circular ConvNet changes accuracy by "
             f"{_say(head)}, zero padding by {_say(pad)}, plain strides by "
             f"{_say(s['cnn_strided - cnn_gap, out of support'])}; head against padding "
             f"{_say(versus)}: {verdict}.")
  mt, ms = _family(_rows(matched), [("cnn_flat", "cnn_gap", IN), ("cnn_flat", "cnn_gap", OUT)],
                   other=rows)
  inside = ms["cnn_flat - cnn_gap, in support"]
  size = {m: next(r["num_params"] for r in src["rows"] if r["model"] == m)
          for src, m in ((matched, "cnn_flat"), (saved, "cnn_gap"), (saved, "cnn_circ_flat"))}
  if _shows(inside, 1):
    claim = ("so a flatten head is more accurate in support than global pooling at equal "
             "parameter count, consistent with it using where the digit sits")
  elif _shows(inside, -1):
    claim = ("so at equal parameter count the flatten head is the less accurate one in support: "
             "the default `cnn_flat`'s lead there goes with its size")
  else:
    claim = ("so at equal parameter count these seeds show no in-support difference that "
             "survives the correction: that a flatten head gains from absolute position is not "
             "shown")
  matched_text = (
      f"The flatten control at `cnn_gap`'s size (`cnn_flat` with channels "
      f"{','.join(map(str, matched['flags']['cnn_channels']))}: {size['cnn_flat']:,} parameters "
      f"against `cnn_gap`'s {size['cnn_gap']:,}; the default flatten nets have "
      f"{size['cnn_circ_flat']:,}) differs from `cnn_gap` in support by {_say(inside)}, {claim}. "
      "Out of support it falls as the large flatten nets do: "
      f"{_say(ms['cnn_flat - cnn_gap, out of support'])}. "
      "It keeps the trunk's depth but narrows it (a 1-channel last layer feeds the head), so it "
      "changes width as well as the head: a confound this control cannot remove. Paired with "
      "`cnn_gap` of the ablation run by seed (same digits and training code, two processes).")
  return "\n\n".join([
      "## One change at a time: ConvNet ablations (seeds 0-2)",
      f"Rule: {_rule(saved['flags'])}. Every ablation paired with `cnn_gap` of the same run.",
      _summary_table(saved, ["cnn_gap", "cnn_zero_gap", "cnn_circ_flat", "cnn_strided"]),
      table, reading, "### Parameter-matched flatten head",
      _summary_table(matched), mt, matched_text])


def _augmentation_section(saved: dict) -> str:
  rows = _rows(saved)
  learned = sorted({m for m, _ in rows if m.startswith("learned_aug")})
  table, s = _family(rows, [(m, "mlp_aug_support", k) for m in learned for k in (IN, OUT)]
                     + [("orbit_sampled", "mlp_aug_support", OUT)])
  widths = {m: np.mean([r["learned_width"]["dy"] for r in saved["rows"] if r["model"] == m])
            for m in learned}
  trades = "; ".join(
      f"`{m}` (range ±{widths[m]:.1f} px rows): in {_say(s[f'{m} - mlp_aug_support, in support'])}"
      f", out {_say(s[f'{m} - mlp_aug_support, out of support'])}" for m in learned)
  return "\n\n".join([
      "## Sampled orbit and learned augmentation (seeds 0-2)",
      "One baseline for every learned-augmentation trade: `mlp_aug_support` (augmentation that "
      "keeps the digit in the training support), in the same run.",
      _summary_table(saved, ["orbit_sampled", "mlp_aug_support", *learned]), table,
      f"Against that baseline: {trades}."])


def _converged_section(saved: dict, default: dict, orbit: dict) -> str:
  """mlp_aug_full trained to its plateau, against orbit_full under the same rule (``orbit``, same
  host) and the default run's rows of the same seeds."""
  rows, base, same = _rows(saved), _rows(default), _rows(orbit)
  aug = "mlp_aug_full"
  table, s = paired_family({
      f"orbit_full (same rule) - {aug}, out of support": _diffs(same, "orbit_full", rows, aug, OUT),
      f"orbit_full (same rule) - {aug}, in support": _diffs(same, "orbit_full", rows, aug, IN),
      f"orbit_full (default run) - {aug}, out of support": _diffs(base, "orbit_full", rows, aug, OUT),
      f"orbit_full (default run) - {aug}, in support": _diffs(base, "orbit_full", rows, aug, IN),
      f"{AUG_EVAL} - {aug}, out of support": _diffs(rows, AUG_EVAL, rows, aug, OUT),
      f"{aug} - {aug} (default run), out of support": _diffs(rows, aug, base, aug, OUT)})
  sfirst, slast, searly, sn = _stopped(orbit, "orbit_full")
  same_out = s[f"orbit_full (same rule) - {aug}, out of support"]
  first, last, early, n = _stopped(saved, aug)
  dfirst, dlast, _, _ = _stopped(default, "orbit_full")
  out = s[f"orbit_full (default run) - {aug}, out of support"]
  gain = s[f"{aug} - {aug} (default run), out of support"]
  verdict = ("the orbit model stays ahead out of support of augmentation trained to its own "
             "plateau" if _shows(out, 1) and _shows(same_out, 1) else
             "at augmentation's plateau the orbit model's lead out of support is not shown in "
             "both comparisons")
  return "\n\n".join([
      "## Augmentation trained until it stops improving",
      f"Rule: {_rule(saved['flags'])} (the cosine schedule decays over the cap). `{aug}` stopped "
      f"at steps {first}-{last} ({early} of {n} runs stopped by the rule before the cap). Its "
      f"comparison partner is `orbit_full` of the default run (stopped at {dfirst}-{dlast} "
      "steps by the default rule: a smaller budget than augmentation gets here), paired by seed "
      "(same digit splits); the two runs were made on different hosts, whose float summation "
      "orders differ (docs/results/orbit_default_recheck), an added noise the pairing does not "
      "remove.",
      f"Under the same rule, on the same host, `orbit_full` (seeds "
      f"{', '.join(str(r['seed']) for r in orbit['rows'])}) stopped at steps {sfirst}-{slast} "
      f"({searly} of {sn} before the cap).",
      _summary_table(saved), _summary_table(orbit), table,
      f"Both trained to their plateau under one rule, the orbit model minus augmentation out of "
      f"support: {_say(same_out)}; in support "
      f"{_say(s[f'orbit_full (same rule) - {aug}, in support'])}. "
      f"Trained to its plateau, `{aug}` gains {_say(gain)} out of support over its default-rule "
      f"runs. The orbit model minus augmentation, out of support: {_say(out)}; in support "
      f"{_say(s[f'orbit_full (default run) - {aug}, in support'])}: {verdict}. Averaging the "
      "augmented MLP over the orbit at test time changes its out-of-support accuracy by "
      f"{_say(s[f'{AUG_EVAL} - {aug}, out of support'])}."])


def _rotation_section(saved: dict) -> str:
  rows = _rows(saved)
  arms = [m for m in ("mlp_aug_full", "orbit_full", "orbit_sampled", "p4", "cnn_flat")
          if (m, saved["rows"][0]["seed"]) in rows]
  table, s = _family(rows, [(m, "mlp", OUT) for m in arms]
                     + [("p4", m, IN) for m in ("orbit_full", "mlp_aug_full", "cnn_flat")],
                     names=ROTATED)
  gains = ", ".join(f"`{m}` {_say(s[f'{m} - mlp, rotated'])}" for m in arms)
  p4 = ", ".join(f"`{m}` {_say(s[f'p4 - {m}, upright'])}"
                 for m in ("orbit_full", "mlp_aug_full", "cnn_flat"))
  return "\n\n".join([
      "## C4 rotations (5 seeds)",
      f"Trained upright (6 and 9 excluded), tested upright (\"in support\") and rotated by k x 90 "
      f"degrees, k = 1..3 (\"out of support\"). Rule: {_rule(saved['flags'])}.",
      _summary_table(saved), table,
      f"Rotated accuracy against the plain MLP: {gains}. Upright, p4 minus: {p4}."])


def _cost(results: dict[str, dict]) -> str:
  """Training time of each saved run (the rows' train seconds; wall time and load: RUN.md)."""
  parts = [f"`{name}` {len(saved['rows'])} rows, {sum(r['train_seconds'] for r in saved['rows']):,.0f} s"
           for name, saved in results.items()]
  return ("## Cost\n\nTraining seconds summed over each run's rows, on a 2-core CPU VM without a "
          "GPU (shared with other runs while most of these ran, so several times a quiet "
          "machine's; each run's RUN.md gives its wall time and load): " + "; ".join(parts) + ".")


def document(results: dict[str, dict]) -> str:
  """docs/studies/orbit.md from the saved runs (registered in ``experiments.docs``)."""
  r = results
  return "\n\n".join([
      _intro(r["orbit_default"]["flags"]), _COMMANDS, _default_section(r["orbit_default"]),
      _ablation_section(r["orbit_ablations"], r["orbit_flat_matched"]),
      _augmentation_section(r["orbit_ablations"]),
      _converged_section(r["orbit_aug_converged"], r["orbit_default"],
                         r["orbit_full_converged"]),
      _rotation_section(r["orbit_rotation"]),
      "Jensen's inequality (the orbit model's loss never exceeds the mean loss over transformed "
      "copies, for cross-entropy on logits) is checked on every MLP-based row as a float sanity "
      "check (results.md of each run), not a finding.", _cost(results)]) + "\n"
