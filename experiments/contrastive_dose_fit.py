r"""The contrastive study's dose-response: how many light-mentioning captions put the light on the
image embedding, fitted over converged runs only, with count and rate told apart.

    python -m experiments.contrastive_dose_fit docs/results/contrastive_dose_fit \
        docs/results/contrastive_default docs/results/contrastive_dose \
        docs/results/contrastive_dose_gap docs/results/contrastive_dose_matched

reads the rows of saved contrastive results (``results.json``; a run saved in two of them, same
setting and seed, counts once) and writes results.json, results.md and dose_response.png to the
first directory.

* **Converged** (``converged``): a run of the ``mention`` policy whose final training loss is at
  most ``car_floor(batch) + TOL``. ``car_floor`` is the loss of a tower that has learned the car
  colour (named in every caption) and nothing else: with 4 equally likely colours, each image and
  each caption has K = 1 + Bin(B - 1, 1/4) same-colour partners in a batch of B, and both
  directions of the loss bottom out at E[log K] (3.478 at B = 128). A tower that also learns the
  light can go lower, one that ignores it cannot, so the rule does not look at the light.
* **The fit** (``fit``): ``invariance.dose_response`` over the converged runs' embedding light
  probes against their exposures, with a free floor; the bootstrap resamples seeds within each
  setting (p x steps), so every resample keeps every setting.
* **Count against rate** (``matched``): where two settings reach the same number of light captions
  (p x steps equal), once at rate p over more steps and once at a higher rate over fewer, the
  per-seed difference (longer minus shorter) of the light probe, with Holm-Bonferroni across the
  matched pairs.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Sequence

import numpy as np

from experiments import report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dose_response
from invariance.data import scenes

TOL = 0.05             # nats above the car-only floor that still count as converged
LEVEL = 0.9            # the probe accuracy whose dose the fit reports
N_BOOT = 300
MIN_SETTINGS = 5       # values of p a training length needs for a fit of its own
LIGHT = dashcam.LIGHT
CHANCE = 1.0 / len(scenes.ATTRIBUTES[LIGHT])
SETTING = ("loss", "embed_dim", "policy", "lamp_size", "duplicates")


@functools.lru_cache(maxsize=None)
def car_floor(batch_size: int) -> float:
  """E[log K], K = 1 + Bin(batch_size - 1, 1/4): the contrastive loss of a tower that separates the
  car colours and nothing else."""
  from scipy import stats          # pylint: disable=import-outside-toplevel
  k = np.arange(batch_size)
  colours = len(scenes.CAR_COLORS)
  return float(np.sum(stats.binom.pmf(k, batch_size - 1, 1 / colours) * np.log1p(k)))


def converged(row: dict, batch_size: int) -> bool:
  return (row["policy"] == "mention" and row.get("final_loss") is not None
          and row["final_loss"] <= car_floor(batch_size) + TOL)


def light(row: dict) -> float:
  return row["probe"]["embedding"][LIGHT]


def pool(row_lists: Sequence[Sequence[dict]]) -> list[dict]:
  """The rows of several results, a run (setting, steps, p, seed) counted once."""
  out = {}
  for rows in row_lists:
    for r in rows:
      out.setdefault(tuple(r[k] for k in SETTING + ("steps", "mention_prob", "seed")), r)
  return list(out.values())


def fit(rows: Sequence[dict], batch_size: int, n_boot: int = N_BOOT) -> dict:
  """The bootstrap fit over the converged runs (``invariance.dose_response.bootstrap``), or
  ``{"error": ...}`` when they are too few or the fit fails."""
  kept = [r for r in rows if converged(r, batch_size)]
  out = {"points": len(kept), "runs": len(rows), "settings": len(
      {(r["steps"], r["mention_prob"]) for r in kept})}
  try:
    got = dose_response.bootstrap([r["exposures"] for r in kept], [light(r) for r in kept],
                                  CHANCE, LEVEL, groups=[(r["steps"], r["mention_prob"])
                                                         for r in kept], n_boot=n_boot)
  except (RuntimeError, ValueError) as e:        # reported, not hidden
    return {**out, "error": str(e).splitlines()[0]}
  return {**out, **got}


def matched(rows: Sequence[dict], batch_size: int) -> dict[str, dict]:
  """``{name: holm_family entry}`` for every pair of settings with the same p x steps (the same
  number of light captions, up to sampling): light probe of the longer run minus the shorter,
  paired by seed, converged pairs only; Holm-Bonferroni across the pairs."""
  by = {}
  for r in rows:
    if converged(r, batch_size):
      by.setdefault((r["steps"], r["mention_prob"]), {})[r["seed"]] = light(r)
  diffs = {}
  for (s1, p1), a in sorted(by.items()):
    for (s2, p2), b in sorted(by.items()):
      if s2 > s1 and p1 > 0 and math.isclose(p1 * s1, p2 * s2):
        seeds = sorted(set(a) & set(b))
        if seeds:
          name = (f"{p2:g} x {s2} - {p1:g} x {s1} ({p1 * s1 * batch_size:,.0f} light captions)")
          diffs[name] = [b[s] - a[s] for s in seeds]
  return report.holm_family(diffs) if diffs else {}


def table(rows: Sequence[dict], batch_size: int) -> list[dict]:
  """Per training length and p: runs, converged runs, exposures, light and car probes on the
  embedding, final losses."""
  out = []
  for steps, p in sorted({(r["steps"], r["mention_prob"]) for r in rows}):
    got = [r for r in rows if r["steps"] == steps and r["mention_prob"] == p]
    ok = [r for r in got if converged(r, batch_size)]
    entry = {"steps": steps, "mention_prob": p, "n": len(got), "converged": len(ok),
             "exposures": float(np.mean([r["exposures"] for r in got])),
             "loss_min": min(r["final_loss"] for r in got),
             "loss_max": max(r["final_loss"] for r in got)}
    for name, values in (("light", [light(r) for r in got]),
                         ("car", [r["probe"]["embedding"]["car_color"] for r in got])):
      entry[f"{name}_mean"], _, entry[f"{name}_ci95"] = report.mean_sd_ci(values)
    out.append(entry)
  return out


def analyse(rows: Sequence[dict], batch_size: int) -> dict:
  """The table, the fit over every converged run (``fit``), the fit at each training length with
  at least ``MIN_SETTINGS`` values of p among its converged runs (``fit_by_steps``: dose and rate
  are one axis there) and the count-against-rate pairs."""
  kept = [r for r in rows if converged(r, batch_size)]
  lengths = [s for s in sorted({r["steps"] for r in kept})
             if len({r["mention_prob"] for r in kept if r["steps"] == s}) >= MIN_SETTINGS]
  return {"batch_size": batch_size, "car_floor": car_floor(batch_size), "tol": TOL,
          "table": table(rows, batch_size), "fit": fit(rows, batch_size),
          "fit_by_steps": {str(s): fit([r for r in rows if r["steps"] == s], batch_size)
                           for s in lengths},
          "matched": matched(rows, batch_size)}


def count(v: float) -> str:
  if math.isnan(v):
    return "n/a"
  return "never (ceiling below)" if math.isinf(v) else f"{v:,.0f}"


def fit_line(f: dict) -> str:
  if "error" in f:
    return f"The fit over {f['points']} converged runs failed ({f['error']})."
  lo, hi = f["dose_at_level_ci95"]
  p = f["fit"]
  return (f"Fit over the {f['points']} converged runs of {f['runs']} ({f['settings']} settings; "
          f"{f['n_boot']} resamples of the seeds within each setting, {f['n_failed']} failed): "
          f"floor {p['floor']:.3f} ({f['floor_ci95'][0]:.3f}-{f['floor_ci95'][1]:.3f}), ceiling "
          f"{p['top']:.3f} ({f['top_ci95'][0]:.3f}-{f['top_ci95'][1]:.3f}); the light probe "
          f"reaches {f['level']:.0%} at **{count(f['dose_at_level'])}** light-mentioning "
          f"captions seen (95% bootstrap interval {count(lo)} - {count(hi)}).")


def table_markdown(entries: Sequence[dict]) -> str:
  return report.markdown_table(
      ["steps", "p", "runs", "converged", "light captions seen", "light probe", "car probe",
       "final loss"],
      [[e["steps"], f"{e['mention_prob']:g}", e["n"], e["converged"], f"{e['exposures']:,.0f}",
        report.pm(e, "light"), report.pm(e, "car"),
        f"{e['loss_min']:.3f}-{e['loss_max']:.3f}"] for e in entries])


def matched_markdown(family: dict) -> str:
  return report.markdown_table(
      ["longer - shorter (same light captions)", "seeds", "difference (95%)", "Holm p",
       "survives Holm"],
      [[name, v["n"], f"{v['mean']:+.3f} ± {v['ci']:.3f}" if v["n"] > 1 else f"{v['mean']:+.3f}",
        f"{v['p_holm']:.3g}", "yes" if v["survives"] else "no"] for name, v in family.items()])


def markdown(result: dict) -> str:
  return "\n".join([
      "# Contrastive study: dose-response at matched exposures\n",
      f"Converged: final training loss <= {result['car_floor']:.3f} (the car-only floor at batch "
      f"{result['batch_size']}) + {result['tol']} nats. Light probe on the image embedding, mean "
      "± 95% t-interval over seeds.\n", table_markdown(result["table"]) + "\n",
      "All converged runs. " + fit_line(result["fit"]) + "\n",
      *[f"{steps} steps only. " + fit_line(f) + "\n" for steps, f in result["fit_by_steps"].items()],
      "Count against rate (paired by seed):\n",
      matched_markdown(result["matched"]) + "\n"])


def plot(path: str, rows: Sequence[dict], result: dict) -> None:
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  bs = result["batch_size"]
  for steps in sorted({r["steps"] for r in rows}):
    for ok, marker in ((True, "o"), (False, "x")):
      pts = [(r["exposures"] + 1, light(r)) for r in rows
             if r["steps"] == steps and converged(r, bs) == ok]
      if pts:
        ax.plot(*zip(*pts), marker, ms=4, alpha=0.7,
                label=f"{steps} steps, {'converged' if ok else 'not converged'}")
  f = result["fit"]
  grid = np.logspace(0, math.log10(max(r["exposures"] for r in rows) + 1), 200)
  fits = [("fit, all converged runs", f)] + [(f"fit, {s} steps", g)
                                             for s, g in result["fit_by_steps"].items()]
  for label, g in fits:
    if "fit" in g:
      ax.plot(grid, dose_response.curve(grid - 1, **g["fit"]), "-", lw=1.5, label=label)
  ax.axhline(LEVEL, color="grey", ls="--", lw=0.8)
  ax.axhline(CHANCE, color="grey", ls=":")
  ax.set_xscale("log")
  ax.set_xlabel("1 + light-mentioning captions seen in training")
  ax.set_ylabel("light probe on the embedding")
  ax.set_ylim(0.4, 1.02)
  ax.legend(fontsize=7)
  workdir_lib.save_figure(fig, path)
  plt.close(fig)


def main(argv: Sequence[str]) -> int:
  if len(argv) < 3:
    print("error: usage: python -m experiments.contrastive_dose_fit OUT_DIR RESULTS_DIR...",
          file=sys.stderr)
    return 2
  out, sources, loaded = argv[1], argv[2:], []
  for d in sources:
    path = os.path.join(d, "results.json")
    if not os.path.isfile(path):
      print(f"error: {d}: no results.json; allowed: saved contrastive results directories",
            file=sys.stderr)
      return 2
    with open(path) as f:
      loaded.append(json.load(f))
  sizes = {r["flags"]["batch_size"] for r in loaded}
  if len(sizes) != 1 or any(r.get("study") != "contrastive" for r in loaded):
    print(f"error: {', '.join(sources)}: allowed: contrastive results of one batch size "
          f"(got {sorted(sizes)})", file=sys.stderr)
    return 2
  rows = pool([r["rows"] for r in loaded])
  settings = {tuple(r[k] for k in SETTING) for r in rows}
  if len(settings) != 1:
    print(f"error: {', '.join(sources)}: allowed: results of one setting ({', '.join(SETTING)}); "
          f"got {len(settings)}", file=sys.stderr)
    return 2
  result = {"sources": list(sources), **analyse(rows, sizes.pop())}
  os.makedirs(out, exist_ok=True)
  plot(os.path.join(out, "dose_response.png"), rows, result)
  workdir_lib.write_atomic(os.path.join(out, "results.md"), markdown(result))
  workdir_lib.write_json(os.path.join(out, "results.json"), result)
  print(markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
