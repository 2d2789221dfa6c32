"""The contrastive study's write-up (docs/studies/contrastive.md), generated from saved results.

``document(results)`` (``experiments.docs``) gets the parsed results.json of every directory in
``RESULTS`` and returns the page: what the study asks, the commands, the tables and the reading.
Every paired interval is a run minus its own initialisation (or, for count against rate, one run
minus another), paired by seed; a *family* is every layer x attribute of one setting and p
(8 x 4 = 32 endpoints), corrected with Holm-Bonferroni (``report.holm_family``); intervals that
survive are marked with ``report.HOLM_MARK``. The reading's sentences are built from the same
numbers, so they say only what the intervals show.
"""
from __future__ import annotations

import math
from typing import Sequence

from experiments import contrastive_dose_fit as dose_fit
from experiments import report
from experiments.contrastive_runs import LAYERS
from invariance import dashcam

DOSE = ("contrastive_default", "contrastive_dose", "contrastive_dose_gap",
        "contrastive_dose_matched")
RESULTS = (*DOSE, "contrastive_dose_fit", "contrastive_roles", "contrastive_full",
           "contrastive_b65536")
ATTRS = dashcam.ATTRIBUTES
LIGHT = dashcam.LIGHT
DEFAULT = {"loss": "clip", "embed_dim": 8, "policy": "mention", "lamp_size": 2,
           "duplicates": "negative"}
SHARED = ("contrastive_default", "contrastive_dose", "contrastive_roles", "contrastive_full")
FLAGFILE = {"contrastive_default": "contrastive.flags", "contrastive_dose": "contrastive_dose.flags",
            "contrastive_dose_gap": "contrastive_dose_gap.flags",
            "contrastive_dose_matched": "contrastive_dose_matched.flags",
            "contrastive_roles": "contrastive_roles.flags",
            "contrastive_full": "contrastive_full.flags"}


# -- paired families ------------------------------------------------------------------------------
def _match(row: dict, setting: dict) -> bool:
  return all(row[k] == v for k, v in setting.items())


def runs(res: dict, setting: dict, p: float, steps: int | None = None) -> list[dict]:
  steps = max(r["steps"] for r in res["rows"]) if steps is None else steps
  return sorted((r for r in res["rows"] if _match(r, setting) and r["mention_prob"] == p
                 and r["steps"] == steps), key=lambda r: r["seed"])


def family(res: dict, setting: dict, p: float) -> dict[tuple[str, str], dict]:
  """``{(layer, attribute): holm_family entry}``: the probe of each run minus its own init,
  paired by seed, for every layer x attribute of one setting and p, Holm-corrected together."""
  inits = {(i["seed"], i["embed_dim"], i["lamp_size"]): i for i in res["init_rows"]}
  got = runs(res, setting, p)
  diffs = {(layer, a): [r["probe"][layer][a] - inits[(r["seed"], r["embed_dim"],
                                                      r["lamp_size"])]["probe"][layer][a]
                        for r in got] for layer in LAYERS for a in ATTRS}
  fam = report.holm_family({f"{layer} {a}": d for (layer, a), d in diffs.items()})
  return {(layer, a): fam[f"{layer} {a}"] for layer, a in diffs}


def cell(e: dict) -> str:
  """``+0.158 ± 0.111``, marked ``report.HOLM_MARK`` when it survives Holm across its family."""
  return report.paired_cell(e)


def excludes_zero(e: dict) -> bool:
  return e["n"] >= 2 and abs(e["mean"]) > e["ci"]


def _names(keys: Sequence[tuple[str, str]]) -> str:
  return ", ".join(f"{layer} {a}" for layer, a in keys) or "none"


def _pm(values: Sequence[float]) -> str:
  mean, _, ci = report.mean_sd_ci(list(values))
  return f"{mean:.3f}" if len(values) < 2 else f"{mean:.3f} ± {ci:.3f}"


def _init_values(res: dict, dim: int, lamp: int, layer: str, a: str) -> list[float]:
  return [i["probe"][layer][a] for i in res["init_rows"]
          if i["embed_dim"] == dim and i["lamp_size"] == lamp]


def _zero_shot(rows: Sequence[dict], a: str) -> str:
  return _pm([sum(r["zero_shot"][a].values()) / len(r["zero_shot"][a]) for r in rows])


def _seconds(res: dict) -> float:
  return sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in res["rows"])


def _seeds(res: dict) -> str:
  seeds = res["flags"]["seeds"]
  return f"{len(seeds)} seeds" if len(seeds) > 1 else "1 seed"


# -- sections -------------------------------------------------------------------------------------
def intro(results: dict) -> str:
  cmds = "\n".join(f"python -m experiments.contrastive --flagfile=experiments/configs/{f}"
                   for f in FLAGFILE.values())
  return f"""# Contrastive study: captions decide what the image embedding keeps

Dual encoders (a small ConvNet image tower, a mean-pooled text tower, the CLIP or SigLIP loss) are
trained on procedural 32x32 dashcam scenes (car colour, red or green traffic light, pedestrian,
clouds, plus nuisance variation) whose captions follow a curation policy: `mention` names the car
and mentions the traffic light with probability p; `swap` names the light and mentions the car with
probability p. When captions never mention the light, is it **suppressed** (present in the tower,
then removed) or **never learned**? And how many light-mentioning captions does it take to keep it?

Measured per run on held-out scenes, for every layer of the image tower (each conv block on an 8x8
grid and globally pooled, the penultimate layer, the embedding): a ridge probe per attribute
(regularisation chosen by leave-one-out cross-validation) and the counterfactual sensitivity
(distance to the scene with one attribute flipped over the distance to an unrelated scene); the
same for the same tower at initialisation (each run's own start, so trained - init is paired by
seed); zero-shot accuracy from prompts that are not training captions; and the number of
light-mentioning captions the run's batches held (the dose). Chance: car colour 0.25, every other
attribute 0.50. Mean ± 95% t-interval over seeds.

```bash
{cmds}
python -m experiments.contrastive_dose_fit docs/results/contrastive_dose_fit \\
    docs/results/contrastive_default docs/results/contrastive_dose \\
    docs/results/contrastive_dose_gap docs/results/contrastive_dose_matched
```

`python -m experiments.contrastive --workdir=DIR` runs the default (its flagfile holds only the
workdir). The suppression test with p = 1 towers continued on p = 0 captions, and CLIP against a
SigLIP with its own recipe, are separate studies (`contrastive_suppression`, `contrastive_losses`).

**Statistics.** Paired intervals are per-seed differences, mean ± 95% t-interval. Each setting and p
is one family of {len(LAYERS)} layers x {len(ATTRS)} attributes = {len(LAYERS) * len(ATTRS)} paired
endpoints, corrected with Holm-Bonferroni at 0.05: intervals marked {report.HOLM_MARK} survive it.
An interval that excludes 0 but is not marked is not a corrected finding. With 3 seeds a t-test
gives a p-value small enough to survive only when the three differences are nearly equal, so a
3-seed survivor (and a 3-seed non-survivor) says less than a 5-seed one.
"""


def shared_runs(results: dict) -> str:
  """Whether the CLIP, dim 8, p = 0, longest-run rows of seeds 0-2 are the same in every table."""
  rows = {name: {r["seed"]: r for r in runs(results[name], DEFAULT, 0.0, 400)} for name in SHARED}
  seeds = sorted(set.intersection(*(set(v) for v in rows.values())))
  same = all(rows[name][s]["probe"] == rows[SHARED[0]][s]["probe"]
             and rows[name][s]["final_loss"] == rows[SHARED[0]][s]["final_loss"]
             for name in SHARED for s in seeds)
  verdict = ("the same runs (identical rows: every probe and the final loss), not replications"
             if same else "not identical rows: read them as separate runs")
  return (f"The CLIP, dim 8, p = 0, 400-step runs of seeds {', '.join(map(str, seeds))} appear in "
          f"the default, dose, role-swap and fuller-grid tables: they are {verdict}.")


def default_section(results: dict) -> str:
  res = results["contrastive_default"]
  fams = {p: family(res, DEFAULT, p) for p in (0.0, 1.0)}
  by_p = {p: runs(res, DEFAULT, p) for p in (0.0, 1.0)}
  inits = res["init_rows"]
  sens = lambda rows, layer: _pm([r["sensitivity"][layer][LIGHT] for r in rows])
  light_table = report.markdown_table(
      ["layer", "init probe", "p = 0 probe", "p = 1 probe", "p = 0 - init", "p = 1 - init",
       "init sens.", "p = 0 sens.", "p = 1 sens."],
      [[layer, _pm([i["probe"][layer][LIGHT] for i in inits])]
       + [_pm([r["probe"][layer][LIGHT] for r in by_p[p]]) for p in (0.0, 1.0)]
       + [cell(fams[p][(layer, LIGHT)]) for p in (0.0, 1.0)]
       + [_pm([i["sensitivity"][layer][LIGHT] for i in inits])]
       + [sens(by_p[p], layer) for p in (0.0, 1.0)] for layer in LAYERS])
  attr_tables = "\n\n".join(
      f"p = {p:g}, trained - init for every attribute (paired by seed):\n\n" + report.markdown_table(
          ["layer"] + list(ATTRS), [[layer] + [cell(fams[p][(layer, a)]) for a in ATTRS]
                                    for layer in LAYERS]) for p in (0.0, 1.0))
  trace = _trace_table(res)
  survive = {p: [k for k, e in fams[p].items() if e["survives"]] for p in fams}
  gains0 = [layer for layer in LAYERS if excludes_zero(fams[0.0][(layer, LIGHT)])
            and fams[0.0][(layer, LIGHT)]["mean"] > 0]
  falls0 = [layer for layer in LAYERS if excludes_zero(fams[0.0][(layer, LIGHT)])
            and fams[0.0][(layer, LIGHT)]["mean"] < 0]
  ped0 = [layer for layer in LAYERS if excludes_zero(fams[0.0][(layer, "pedestrian")])]
  emb0 = fams[0.0][("embedding", LIGHT)]
  init_car = _pm(_init_values(res, 8, 2, "embedding", "car_color"))
  car = lambda p: _pm([r["probe"]["embedding"]["car_color"] for r in by_p[p]])
  p0_light_words = sum(r["mentions"] for r in by_p[0.0])
  n = len(res["flags"]["seeds"])
  ped = fams[0.0][("penultimate", "pedestrian")]
  reading = [
      f"* **p = 1**: {len(survive[1.0])} of {len(fams[1.0])} endpoints survive Holm: "
      f"{_names(survive[1.0])}. Car colour on the embedding: {init_car} at init, {car(0.0)} at "
      f"p = 0 and {car(1.0)} at p = 1.",
      f"* **p = 0, the light**: the random tower's embedding holds "
      f"{_pm(_init_values(res, 8, 2, 'embedding', LIGHT))} (chance 0.5) and p = 0 training "
      f"changes it by {cell(emb0)}"
      + (f": no gain this interval can show (it bounds one at {emb0['mean'] + emb0['ci']:+.3f}),"
         " i.e. never learned at the embedding" if not excludes_zero(emb0) else "")
      + f". Before correction the light gains at p = 0 in {', '.join(gains0) or 'no layer'} and "
      f"falls in {', '.join(falls0) or 'no layer'} (intervals that exclude 0); "
      f"{sum(fams[0.0][(layer, LIGHT)]['survives'] for layer in LAYERS)} of the {len(LAYERS)} "
      f"survive Holm (all p = 0 survivors in the family: {_names(survive[0.0])}).",
      f"* **p = 0, the never-captioned pedestrian**: intervals that exclude 0 (uncorrected): "
      f"{', '.join(ped0) or 'none'} (penultimate {cell(ped)}, Holm p = {ped['p_holm']:.2g}); "
      f"{sum(fams[0.0][(layer, 'pedestrian')]['survives'] for layer in LAYERS)} survive Holm.",
      f"* **Zero-shot light at p = 0 is not testable**: the {n} p = 0 runs saw "
      f"{p0_light_words} light-mentioning captions, so the prompt's light words never occurred in "
      f"training (zero-shot light {_zero_shot(by_p[0.0], LIGHT)} at p = 0, "
      f"{_zero_shot(by_p[1.0], LIGHT)} at p = 1; zero-shot car {_zero_shot(by_p[0.0], 'car_color')}"
      f" and {_zero_shot(by_p[1.0], 'car_color')}).",
      f"* The light-flip sensitivity of the embedding falls at p = 0 "
      f"({_pm([i['sensitivity']['embedding'][LIGHT] for i in inits])} -> "
      f"{sens(by_p[0.0], 'embedding')}), but this ratio's denominator grows as the car comes to "
      "dominate the embedding, and these rows do not hold numerator and denominator apart. 'Red' "
      "is both a car colour and a light colour in these scenes (pixels and words).",
      "* Whether training *removes* a light that is there cannot show here: the start holds "
      "next to none. `contrastive_suppression` tests it from towers that hold the light."]
  return f"""## Default: every layer against its initialisation, p = 0 and p = 1

CLIP, dim 8, 400 steps of batch 128 on 20,000 scenes, {_seeds(res)}, traced at steps
{', '.join(str(s) for s in res['flags']['probe_steps'])}. Light probe and light-flip sensitivity:

{light_table}

{attr_tables}

The light probe through training (mean over seeds; the peak, and the drop from it to the end):

{trace}

{shared_runs(results)}

Reading:

""" + "\n".join(reading) + "\n"


def _trace_table(res: dict) -> str:
  out = []
  for p in res["flags"]["trace_probs"]:
    got = runs(res, DEFAULT, p)
    steps = sorted(int(s) for s in got[0]["trace"])
    rows = []
    for layer in LAYERS:
      means = [sum(r["trace"][str(s)]["probe"][layer][LIGHT] for r in got) / len(got)
               for s in steps]
      peak = max(range(len(means)), key=means.__getitem__)
      rows.append([layer] + [f"{m:.3f}" for m in means] + [steps[peak],
                                                           f"{means[peak] - means[-1]:+.3f}"])
    out.append(f"p = {p:g}:\n\n" + report.markdown_table(
        ["layer"] + [f"step {s}" for s in steps] + ["peak at", "peak - end"], rows))
  return "\n\n".join(out)


def _grid(res: dict) -> str:
  ps = ", ".join(f"{p:g}" for p in res["flags"]["mention_probs"])
  return f"p in {{{ps}}} x {' and '.join(map(str, res['flags']['steps']))} steps, {_seeds(res)}"


def dose_section(results: dict) -> str:
  fit = results["contrastive_dose_fit"]
  f, fam = fit["fit"], fit["matched"]
  excl = [k for k, v in fam.items() if excludes_zero(v)]
  surv = [k for k, v in fam.items() if v["survives"]]
  unconv = ", ".join(f"{e['steps']} steps p = {e['mention_prob']:g} ({e['converged']} of "
                     f"{e['n']})" for e in fit["table"] if e["converged"] < e["n"]) or "none"
  lo, hi = f.get("dose_at_level_ci95", (math.nan, math.nan))
  sources = "\n".join(f"* `{FLAGFILE[name]}`: {_grid(results[name])}" for name in DOSE)
  g400 = fit["fit_by_steps"].get("400", {})
  fixed = (f"At a fixed length of 400 steps the light probe on the embedding reaches "
           f"{g400['level']:.0%} at about {dose_fit.count(g400['dose_at_level'])} light-mentioning "
           f"captions (95% bootstrap interval {dose_fit.count(g400['dose_at_level_ci95'][0])} - "
           f"{dose_fit.count(g400['dose_at_level_ci95'][1])}, {g400['points']} converged runs)"
           if "fit" in g400 else "No fixed-length fit")
  if surv:
    reading = (f"{fixed}. Count alone does not set the dose: at the same number of light captions, "
               "the longer, slower run minus the shorter, faster one is "
               f"{'; '.join(f'{cell(fam[k])} at {k}' for k in surv)} (surviving Holm), "
               "so the pooled fit over both lengths mixes two curves and the fixed-length fit is "
               "the one to read. Where a matched interval includes 0 "
               f"({'; '.join(k for k in fam if k not in surv) or 'none'}), the two are not told "
               "apart at this power.")
  else:
    reading = (f"{fixed}. At matched counts no difference survives Holm (intervals that exclude 0 "
               f"before correction: {'; '.join(excl) or 'none'}): count and rate are not told "
               "apart at this power, and the pooled fit over every converged run ("
               f"{dose_fit.count(f.get('dose_at_level', math.nan))}; {dose_fit.count(lo)} - "
               f"{dose_fit.count(hi)}) rests on that.")
  by_steps = "\n\n".join(f"At {steps} steps only (one length, so dose and rate are one axis): "
                          + dose_fit.fit_line(g) for steps, g in fit["fit_by_steps"].items())
  return f"""## Dose-response at matched exposures

How many light-mentioning captions must a tower see before the light is on its embedding? Four
saved runs of the same setting (CLIP, dim 8, lamp 2 px), pooled by `experiments.contrastive_dose_fit`
(a run saved in two of them, same p, length and seed, counts once):

{sources}

The gap flagfile fills the range between 15,264 and 51,200 light captions at 400 steps; the
matched one reaches the same count at two rates, p over 800 steps and 2p over 400 (51,200 pairs
it with the p = 1, 400-step runs of the default and dose flagfiles).

**Converged runs only.** A run counts as converged when its final training loss is at most
{fit['car_floor']:.3f} + {fit['tol']} nats: {fit['car_floor']:.3f} is the loss of a tower that has
learned the car colour (named in every caption) and nothing else, E[log K] with K = 1 + Bin(127,
1/4) same-colour partners in a batch of {fit['batch_size']}. A tower that also learns the light
can go lower, one that ignores it cannot, so the rule does not look at the light. Settings with
runs that are not converged: {unconv}.

{dose_fit.table_markdown(fit['table'])}

**The fit** (`invariance.dose_response`: accuracy = floor + (top - floor) sigmoid(slope
(log10(1 + dose) - mid)), the floor free; the bootstrap resamples the seeds within each setting,
so every resample keeps every setting). Over every converged run, whatever its length:
{dose_fit.fit_line(f)}

{by_steps}

![dose-response](../results/contrastive_dose_fit/dose_response.png)

**Count against rate.** The same number of light captions, reached at rate p over more steps and at
a higher rate over fewer (longer minus shorter, paired by seed; Holm across the {len(fam)} pairs):

{dose_fit.matched_markdown(fam)}

Reading: {reading}
"""


def roles_section(results: dict) -> str:
  res = results["contrastive_roles"]
  rows_out, survivors, fams = [], [], {}
  for policy in res["flags"]["policies"]:
    for lamp in res["flags"]["lamp_sizes"]:
      setting = {**DEFAULT, "policy": policy, "lamp_size": lamp}
      for p in res["flags"]["mention_probs"]:
        fam, got = family(res, setting, p), runs(res, setting, p)
        fams[(policy, lamp, p)] = fam
        survivors += [(policy, lamp, p, k) for k, e in fam.items() if e["survives"]]
        rows_out.append(
            [policy, lamp, f"{p:g}", _pm([r["probe"]["embedding"][LIGHT] for r in got]),
             cell(fam[("embedding", LIGHT)]), _pm([r["probe"]["block1_grid"][LIGHT] for r in got]),
             _pm([r["probe"]["embedding"]["car_color"] for r in got]),
             cell(fam[("embedding", "car_color")]), _zero_shot(got, LIGHT),
             _zero_shot(got, "car_color")])
  pixel = lambda lamp: _pm([x["probe"][LIGHT] for x in res["pixel_rows"] if x["lamp_size"] == lamp])
  pixels = "; ".join(f"{lamp} px {pixel(lamp)}" for lamp in res["flags"]["lamp_sizes"])
  inits = "; ".join(f"{lamp} px {_pm(_init_values(res, 8, lamp, 'embedding', LIGHT))}"
                    for lamp in res["flags"]["lamp_sizes"])
  swap0 = fams[("swap", 2, 0.0)][("embedding", "car_color")]
  header = ["policy", "lamp px", "p", "light", "light - init", "light: block1 grid", "car",
            "car - init", "zero-shot light", "zero-shot car"]
  listed = ", ".join(f"{a} {b} px p = {c:g} {_names([k])}" for a, b, c, k in survivors) or "none"
  big = {lamp: fams[("mention", lamp, 0.0)][("embedding", LIGHT)]
         for lamp in res["flags"]["lamp_sizes"]}
  return f"""## Role swap and lamp size

`contrastive_roles.flags`: captions that name the car and mention the light with probability p
(`mention`) beside captions that name the light and mention the car with probability p (`swap`),
lamps of {', '.join(map(str, res['flags']['lamp_sizes']))} px, CLIP, dim 8, 400 steps, {_seeds(res)}.
On the embedding ({report.HOLM_MARK}: survives Holm in its family of 32):

{report.markdown_table(header, rows_out)}

Init embedding light: {inits}. Raw-pixel light probe: {pixels}.

Reading: {len(survivors)} of {len(rows_out) * len(LAYERS) * len(ATTRS)} paired endpoints survive
Holm in their families: {listed}.
With captions that name the light and never the car (`swap`, p = 0), the car on the embedding moves
from its init by {cell(swap0)}: "never learned" is what the interval allows, not a corrected finding.
At p = 0 under `mention` the embedding's light moves from its init by
{'; '.join(f'{lamp} px {cell(e)}' for lamp, e in big.items())}: with {_seeds(res)} these are
description, not decided (the lamps grid of `contrastive_suppression` puts bigger lamps to more
seeds).
"""


def full_section(results: dict) -> str:
  res = results["contrastive_full"]
  table, p0_64, every = [], {}, []
  ps, dims = res["flags"]["mention_probs"], res["flags"]["embed_dims"]
  for loss in res["flags"]["losses"]:
    for dim in res["flags"]["embed_dims"]:
      for dup in res["flags"]["duplicate_captions"]:
        setting = {**DEFAULT, "loss": loss, "embed_dim": dim, "duplicates": dup}
        fams = {p: family(res, setting, p) for p in ps}
        every += [f"{loss} dim {dim} {dup} p = {p:g}: {layer} {a}" for p in ps
                  for (layer, a), e in fams[p].items() if e["survives"]]
        got = {p: runs(res, setting, p) for p in ps}
        if dim == max(res["flags"]["embed_dims"]):
          p0_64.update({(loss, dup, p): fams[p][("embedding", LIGHT)] for p in ps if p < 1})
        table.append([loss, dim, dup] + [
            x for p in ps for x in (_pm([r["probe"]["embedding"][LIGHT] for r in got[p]]),
                                    cell(fams[p][("embedding", LIGHT)]))]
            + [_zero_shot(got[max(ps)], LIGHT),
               _pm([r["probe"]["embedding"]["car_color"] for r in got[max(ps)]])])
  header = ["loss", "dim", "duplicates"] + [x for p in ps for x in (f"p = {p:g} light",
                                                                     f"p = {p:g} - init")]
  header += [f"p = {max(ps):g} zero-shot light", f"p = {max(ps):g} car"]
  surv = sum(e["survives"] for e in p0_64.values())
  lo = min(e["mean"] for e in p0_64.values())
  hi = max(e["mean"] for e in p0_64.values())
  siglip = p0_64.get(("siglip", "negative", 0.0))
  init_light = "; ".join(f"dim {d} " + _pm(_init_values(res, d, 2, "embedding", LIGHT))
                         for d in dims)
  return f"""## The fuller grid: SigLIP, a 64-dimensional embedding, duplicate captions

`contrastive_full.flags`: CLIP and SigLIP x dims {' and '.join(map(str, dims))} x p in
{{{', '.join(f'{p:g}' for p in ps)}}} x duplicate captions scored as negatives (the plain losses) or
as positives, 400 steps, {_seeds(res)}. Light probe on the embedding and its paired change from the
same tower at init (init embedding light: {init_light}):

{report.markdown_table(header, table)}

Reading: at dim {max(dims)} every p < 1 setting's embedding sits above its init, by {lo:+.3f} to
{hi:+.3f} ({len(p0_64)} settings). Intervals among these that exclude 0 on their own:
{sum(excludes_zero(e) for e in p0_64.values())} of {len(p0_64)} (SigLIP, negatives, p = 0:
{cell(siglip) if siglip else '-'}); surviving Holm: {surv}. Across all {len(table) * len(ps)}
families of this grid, {len(every)} of
{len(table) * len(ps) * len(LAYERS) * len(ATTRS)} endpoints survive Holm: {'; '.join(every) or 'none'}.
The SigLIP rows use CLIP's recipe (one learning rate, bias -10 at init, which
suits batches far larger than 128), so a SigLIP-CLIP gap here is this recipe, not the loss
(`contrastive_losses` gives each loss its own). For CLIP, scoring duplicates as positives equals
the plain loss once identical captions embed alike (tested), so its `positive` rows are a check.
"""


def b65536_section(results: dict) -> str:
  res = results["contrastive_b65536"]
  rows = res["rows"]
  return f"""## A global batch of {res['flags']['batch_size']:,} on one CPU (plumbing and memory)

The smoke flagfile at batch {res['flags']['batch_size']:,} ({res['flags']['num_train']:,} scenes,
{res['flags']['steps'][0]} steps, past `--tiled_threshold`, so the tiled loss that never holds the
B x B logits): {len(rows)} runs, final losses {', '.join(f"{r['final_loss']:.3f}" for r in rows)},
{sum(r['train_seconds'] for r in rows):.0f} s of training in all. A memory and plumbing check, not
a study: its probes are not a reading. Command, wall time and peak memory:
`docs/results/contrastive_b65536/RUN.md`.
"""


def costs(results: dict) -> str:
  lines = [f"* `{name}`: {len(results[name]['rows'])} runs, "
           f"{_seconds(results[name]) / 60:.1f} min of training and measurement in its rows"
           for name in RESULTS if name in results and "rows" in results[name]]
  return ("## Cost\n\nTraining plus measurement time summed over each saved run's rows (2-core "
          "CPU VM, no GPU); the wall-clock time of each command, the machine's load while it "
          "ran and the exact command are in `docs/results/<name>/RUN.md`:\n\n" + "\n".join(lines)
          + "\n")


def document(results: dict[str, dict]) -> str:
  return "\n".join([intro(results), default_section(results), dose_section(results),
                    roles_section(results), full_section(results), b65536_section(results),
                    costs(results)])
