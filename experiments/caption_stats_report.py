"""The caption-statistics study's report: proportions with 95% intervals, results.json, results.md
and one figure, all made from the rows' counts (``experiments.caption_stats``).

Every proportion is ``{"k", "n", "rate", "low", "high"}``: numerator, denominator, k / n and the
95% interval of ``--interval`` (``scipy.stats.binomtest(k, n).proportion_ci``: Wilson's score
interval, or Clopper-Pearson's exact one); ``rate``, ``low``, ``high`` are None when n = 0.
"""
from __future__ import annotations

from typing import Optional, Sequence

from experiments import report
from experiments import workdir as workdir_lib
from invariance.data import caption_stats

FIGURE = "caption_stats.png"
SCIPY_METHOD = {"wilson": "wilson", "clopper-pearson": "exact"}
# (name, numerator, denominator) per level; "colour" is the colour named near a mention.
IMAGE_RATES = (("mention", "images_mention", "images"),
               ("colour_given_mention", "images_colour_near", "images_mention"),
               ("colour", "images_colour_near", "images"),
               ("colour_any_given_mention", "images_colour_any", "images_mention"))
CAPTION_RATES = (("mention", "captions_mention", "captions"),
                 ("colour_given_mention", "captions_colour_near", "captions_mention"),
                 ("colour", "captions_colour_near", "captions"),
                 ("colour_any_given_mention", "captions_colour_any", "captions_mention"))


def proportion(k: int, n: int, method: str) -> dict:
  """``k`` of ``n`` with its 95% interval (module docstring)."""
  if not 0 <= k <= n:
    raise ValueError(f"k={k}, n={n}: allowed: 0 <= k <= n")
  if n == 0:
    return {"k": 0, "n": 0, "rate": None, "low": None, "high": None}
  from scipy import stats          # pylint: disable=import-outside-toplevel
  ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method=SCIPY_METHOD[method])
  return {"k": int(k), "n": int(n), "rate": k / n, "low": float(ci.low), "high": float(ci.high)}


def rates(counts: dict, which: Sequence[tuple[str, str, str]], method: str) -> dict:
  return {name: proportion(counts[num], counts[den], method) for name, num, den in which}


def results(cfg, dataset_rows: Sequence[dict], corpus_rows: Sequence[dict]) -> dict:
  """results.json: the patterns, the interval, and per group / corpus the counts and proportions."""
  out = {"study": "caption_stats", "patterns": cfg.patterns.describe(),
         "interval": f"{cfg.interval} 95% (scipy.stats.binomtest.proportion_ci)",
         "dataset": None, "corpora": []}
  if dataset_rows:
    total = dataset_rows[0]["counts"]
    for row in dataset_rows[1:]:
      total = caption_stats.add_counts(total, row["counts"])
    out["dataset"] = {
        "name": cfg.dataset, "splits": [r["split"] for r in dataset_rows],
        "examples": sum(r["examples"] for r in dataset_rows), "box_label": cfg.box_label,
        "boxes": sum(r["boxes"] for r in dataset_rows), "area_edges": list(cfg.area_edges),
        "groups": [{"group": name, "counts": counts,
                    "per_image": rates(counts, IMAGE_RATES, cfg.interval),
                    "per_caption": rates(counts, CAPTION_RATES, cfg.interval)}
                   for name, counts in total.items()],
        "per_split": dataset_rows}
  for row in corpus_rows:
    out["corpora"].append({**row, "per_caption": rates(row["counts"], CAPTION_RATES,
                                                       cfg.interval)})
  return out


def _pct(p: dict) -> str:
  if p["rate"] is None:
    return "- (0/0)"
  return (f"{100 * p['rate']:.2f}% [{100 * p['low']:.2f}, {100 * p['high']:.2f}] "
          f"({p['k']}/{p['n']})")


def markdown(res: dict) -> str:
  pat = res["patterns"]
  lines = ["# Caption statistics: how often captions mention the object and name its colour", "",
           f"Mention: `{pat['mention']}`; colour: `{pat['colour']}` within {pat['window_words']} "
           f"words of a mention in the same caption ({pat['flags']}). Intervals: "
           f"{res['interval']}; each cell is rate [95% interval] (numerator/denominator).", ""]
  ds = res["dataset"]
  if ds:
    lines += [f"## {ds['name']} ({', '.join(ds['splits'])}): {ds['examples']} images, "
              f"{ds['boxes']} '{ds['box_label']}' boxes", "",
              "Groups by the largest such box's area (fraction of the image). Per image: any of "
              "its captions; per caption: each caption on its own. colour | mention: the "
              "colour named near the mention; 'colour anywhere' counts any colour word in a "
              "mentioning caption (an upper bound: 'a red bus at a traffic light').", ""]
    header = ["group", "images", "P(mention)", "P(colour | mention)", "P(colour)",
              "P(colour anywhere | mention)", "captions", "P(caption mentions)",
              "P(caption colour | mentions)", "P(caption colour)"]
    body = []
    for g in ds["groups"]:
      im, cap = g["per_image"], g["per_caption"]
      body.append([g["group"], g["counts"]["images"], _pct(im["mention"]),
                   _pct(im["colour_given_mention"]), _pct(im["colour"]),
                   _pct(im["colour_any_given_mention"]), g["counts"]["captions"],
                   _pct(cap["mention"]), _pct(cap["colour_given_mention"]), _pct(cap["colour"])])
    lines += [_table(header, body), ""]
  if res["corpora"]:
    lines += ["## Caption-only corpora (unconditional rates, per caption)", ""]
    header = ["file", "captions", "blank (skipped)", "P(mention)", "P(colour | mention)",
              "P(colour)", "P(colour anywhere | mention)"]
    body = [[c["path"], c["counts"]["captions"], c["blank"], _pct(c["per_caption"]["mention"]),
             _pct(c["per_caption"]["colour_given_mention"]), _pct(c["per_caption"]["colour"]),
             _pct(c["per_caption"]["colour_any_given_mention"])] for c in res["corpora"]]
    lines += [_table(header, body), ""]
  return "\n".join(lines)


def _table(header: Sequence[str], body) -> str:
  """A markdown table whose cells may hold '|' (as in P(a | b)): escaped."""
  return report.markdown_table([h.replace("|", "\\|") for h in header], body)


def _errorbar(ax, xs, props: Sequence[dict], **kw) -> None:
  pts = [(x, p) for x, p in zip(xs, props) if p["rate"] is not None]
  if not pts:
    return
  x = [x for x, _ in pts]
  y = [p["rate"] for _, p in pts]
  err = [[p["rate"] - p["low"] for _, p in pts], [p["high"] - p["rate"] for _, p in pts]]
  ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, **kw)


def plot(res: dict, edges: Optional[Sequence[float]]):
  """Mention and colour rates per box-area stratum (with intervals; the images without a box as
  a dashed reference), or, without a dataset, each corpus's unconditional rates."""
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(8, 4.5))
  ds = res["dataset"]
  if ds:
    strata = caption_stats.stratum_names(edges)
    groups = {g["group"]: g for g in ds["groups"]}
    xs = list(range(len(strata)))
    for level, key, label, shift in (
        ("per_image", "mention", "image: any caption mentions it", -0.1),
        ("per_caption", "mention", "caption mentions it", 0.0),
        ("per_image", "colour", "image: a caption names its colour", 0.1)):
      _errorbar(ax, [x + shift for x in xs], [groups[s][level][key] for s in strata], label=label)
    without = groups["without_box"]["per_image"]["mention"]
    if without["rate"] is not None:
      ax.axhline(without["rate"], ls="--", c="grey", lw=1,
                 label=f"image without a box: any caption mentions it ({without['n']} images)")
    ax.set_xticks(xs, [f"{s}\nn={groups[s]['counts']['images']}" for s in strata])
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel(f"largest '{ds['box_label']}' box area (fraction of the image)")
    ax.set_title(f"{ds['name']}: captions that mention the {ds['box_label']} (95% intervals)")
  else:
    xs = list(range(len(res["corpora"])))
    for key, label, shift in (("mention", "caption mentions it", -0.05),
                              ("colour", "caption names its colour", 0.05)):
      _errorbar(ax, [x + shift for x in xs], [c["per_caption"][key] for c in res["corpora"]],
                label=label, ls="none")
    ax.set_xticks(xs, [c["path"].rsplit("/", 1)[-1] for c in res["corpora"]])
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_title("caption corpora: unconditional rates (95% intervals)")
  ax.set_ylabel("rate")
  ax.set_ylim(bottom=0)
  ax.legend(fontsize=7)
  return fig


def publish(workdir: workdir_lib.Workdir, cfg, dataset_rows, corpus_rows) -> str:
  """Write results.json, results.md and the figure (each atomically); returns the markdown."""
  res = results(cfg, dataset_rows, corpus_rows)
  text = markdown(res)

  def figures(wd):
    fig = plot(res, cfg.area_edges)
    workdir_lib.save_figure(fig, wd.file(FIGURE))
    report.pyplot().close(fig)

  workdir.publish(res, text, figures)
  return text
