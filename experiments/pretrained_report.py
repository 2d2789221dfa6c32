"""The pretrained study's results: results.json (every row, and summaries with 95% intervals over
label draws), results.md (tables) and figures (probe accuracy by block, label curves, placement)."""
from __future__ import annotations

from experiments import report
from experiments import workdir as workdir_lib

NOT_PRETRAINED = ("Every tower here is at random init: these are NOT pretrained results (the "
                  "offline default; pass --checkpoints=ARCH=PATH for real weights).")


def _summary(accs) -> dict:
  mean, sd, ci = report.mean_sd_ci(accs)
  return {"mean": mean, "sd": sd, "ci95": ci, "draws": len(accs)}


def _fmt(s: dict) -> str:
  if s["draws"] < 2 or s["ci95"] != s["ci95"]:
    return f"{s['mean']:.3f}"
  return f"{s['mean']:.3f} ± {s['ci95']:.3f}"


def _full(curve: dict) -> str:
  return max(curve, key=int)


def summarize_row(row: dict) -> dict:
  """Per layer: every label-curve point as mean / sd / 95% interval over draws."""
  return {layer: {n: _summary(accs) for n, accs in curve.items()}
          for layer, curve in row["curves"].items()}


def _best_block(summary: dict) -> tuple[str, dict]:
  blocks = {k: v[_full(v)] for k, v in summary.items() if k.startswith("block")}
  name = max(blocks, key=lambda k: blocks[k]["mean"])
  return name, blocks[name]


def tables(cfg, rows: dict, summaries: dict) -> str:
  out = []
  out.append("## Probes with all training labels\n\nHeld-out accuracy of a ridge probe (mean ± 95% "
             "interval over label draws; with all labels the draws coincide); chance "
             f"{rows['towers'][0]['chance']:.3f}. Best block: the block feature with the highest "
             "mean.\n")
  body = []
  for r in rows["pixels"] + rows["towers"]:
    s = summaries[(r["tower"], r["view"])]
    if r["tower"] == "pixels":
      body.append([r["tower"], r["view"], "-", "-", "-", _fmt(s["pixels"][_full(s["pixels"])]), "-"])
      continue
    name, best = _best_block(s)
    zs = f"{r['zero_shot']:.3f}" if "zero_shot" in r else "no tokenizer"
    body.append([r["tower"], r["view"], name, _fmt(best),
                 _fmt(s["pre_projection"][_full(s["pre_projection"])]),
                 _fmt(s["embedding"][_full(s["embedding"])]), zs])
  out.append(report.markdown_table(["tower", "view", "best block", "its accuracy", "pre-projection",
                                    "embedding / pixels", "zero-shot"], body))
  out.append("\n## Label curves (embedding; pre-projection in brackets)\n")
  first = rows["towers"][0]
  sizes = sorted(first["curves"]["embedding"], key=int)
  body = []
  for r in rows["towers"]:
    s = summaries[(r["tower"], r["view"])]
    body.append([r["tower"], r["view"]] + [f"{_fmt(s['embedding'][n])} ({_fmt(s['pre_projection'][n])})"
                                           for n in sizes])
  out.append(report.markdown_table(["tower", "view"] + [f"n = {n}" for n in sizes], body))
  out.append("\n## Every layer, whole frame, all labels\n")
  frame = [r for r in rows["towers"] if r["view"] == cfg.views[0][0]]
  layers = list(frame[0]["curves"])
  body = [[layer] + [_fmt(summaries[(r["tower"], r["view"])][layer][_full(r["curves"][layer])])
                     for r in frame] for layer in layers]
  out.append(report.markdown_table(["layer"] + [r["tower"] for r in frame], body))
  strata = [r for r in rows["towers"] if "strata" in r]
  if strata:
    st = strata[0]["strata"]
    edges = ", ".join(f"{e:.4f}" for e in st["edges"])
    out.append("\n## Object size (whole frame; probe with all labels)\n\nStrata of the test boxes' "
               f"areas (fraction of the frame; quantiles, or one per size when there are few), "
               f"edges {edges}; examples per stratum {st['counts']}.\n")
    body = [[r["tower"], layer] + [("-" if a is None else f"{a:.3f}") for a in accs]
            for r in strata for layer, accs in r["strata"]["layers"].items()]
    out.append(report.markdown_table(["tower", "layer"] + [f"stratum {i}" for i in range(
        len(st["counts"]))], body))
  seps = [r for r in rows["towers"] if "prompt_separation" in r and r["view"] == cfg.views[0][0]]
  if seps:
    out.append("\n## Does the text tower separate the class prompts?\n\nLeave-one-template-out: "
               "each template's prompt classified by the other templates' class ensembles; cosine "
               "between the class ensembles (1 = one class).\n")
    out.append(report.markdown_table(
        ["tower", "leave one template out", "mean cosine", "max cosine"],
        [[r["tower"]] + [("-" if v is None else f"{v:.3f}") for v in r["prompt_separation"].values()]
         for r in seps]))
  if rows["audit"]:
    names = list(rows["audit"][0]["transforms"])
    out.append("\n## Invariance audit (probe on the pre-projection feature)\n\nOn the colour view "
               "where that probe is most accurate. Flip rate (relative logit change, mean over "
               "examples) per transform; shifts are down and right by the given number of patches, "
               "cyclic or with the edge repeated.\n")
    out.append(report.markdown_table(
        ["tower", "view", "examples", "accuracy"] + names,
        [[a["tower"], a["view"], a["examples"], f"{a['accuracy']:.3f}"] + [
            f"{t['flip_rate']:.3f} ({t['error_mean']:.3f})" for t in a["transforms"].values()]
         for a in rows["audit"]]))
  if rows["placement"]:
    out.append("\n## Placement (object pasted on a grey canvas; probe trained at the centre)\n")
    out.append(report.markdown_table(
        ["tower", "grid", "centre", "mean over positions", "worst position"],
        [[p["tower"], p["grid"], f"{p['centre_accuracy']:.3f}",
          f"{sum(p['accuracy']) / len(p['accuracy']):.3f}", f"{min(p['accuracy']):.3f}"]
         for p in rows["placement"]]))
  if rows["recovery"]:
    out.append("\n## Post-hoc tuning (test accuracy, mean ± 95% interval over seeds)\n")
    out.append(report.markdown_table(
        ["tower", "method", "steps", "learning rate", "tuned", "frozen probe"],
        [[r["tower"], r["method"], r["steps"], r["learning_rate"], _fmt(_summary(r["test_acc"])),
          f"{r['frozen_probe_acc']:.3f}"] for r in rows["recovery"]]))
  return "\n".join(out) + "\n"


def plot(workdir: workdir_lib.Workdir, cfg, rows: dict, summaries: dict) -> None:
  plt = report.pyplot()
  frame = [r for r in rows["towers"] if r["view"] == cfg.views[0][0]]
  fig, ax = plt.subplots(figsize=(8, 4))
  for r in frame:
    s = summaries[(r["tower"], r["view"])]
    for kind, style in (("cls", "-"), ("mean", "--"), ("box", ":")):
      layers = [k for k in s if k.startswith("block") and k.endswith("_" + kind)]
      if layers:
        ax.plot(range(len(layers)), [s[k][_full(s[k])]["mean"] for k in layers], style,
                label=f"{r['tower']} {kind}")
  ax.axhline(frame[0]["chance"], color="grey", lw=0.5)
  ax.set_xlabel("block")
  ax.set_ylabel("probe accuracy (all labels)")
  ax.set_title(f"per-block probes, {cfg.views[0][0]} view")
  ax.legend(fontsize=7)
  workdir_lib.save_figure(fig, workdir.file("layers.png"))
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(8, 4))
  for r in rows["towers"]:
    s = summaries[(r["tower"], r["view"])]["embedding"]
    sizes = sorted(s, key=int)
    ax.errorbar([int(n) for n in sizes], [s[n]["mean"] for n in sizes],
                yerr=[0 if s[n]["ci95"] != s[n]["ci95"] else s[n]["ci95"] for n in sizes],
                label=f"{r['tower']} {r['view']}", capsize=2)
  ax.set_xscale("log")
  ax.set_xlabel("training labels")
  ax.set_ylabel("embedding probe accuracy")
  ax.legend(fontsize=6, ncol=2)
  workdir_lib.save_figure(fig, workdir.file("label_curves.png"))
  plt.close(fig)


def publish(workdir: workdir_lib.Workdir, cfg, study, rows: dict) -> dict:
  summaries = {(r["tower"], r["view"]): summarize_row(r) for r in rows["pixels"] + rows["towers"]}
  pretrained = any(c.path is not None for c in study.towers.values())
  results = {"pretrained_weights": pretrained, "note": None if pretrained else NOT_PRETRAINED,
             "class_names": list(study.data.class_names), "views": [v[0] for v in cfg.views],
             "checkpoints": [{"name": c.name, "arch": c.arch, "path": c.path}
                        for c in study.towers.values()],
             "summaries": {f"{t}__{v}": s for (t, v), s in summaries.items()}, **rows}
  markdown = ("# Pretrained-model study\n\n" + ("" if pretrained else f"**{NOT_PRETRAINED}**\n\n")
              + tables(cfg, rows, summaries))
  return workdir.publish(results, markdown, lambda w: plot(w, cfg, rows, summaries))
