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


def tables(frame_view: str, rows: dict, summaries: dict) -> str:
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
  frame = [r for r in rows["towers"] if r["view"] == frame_view]
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
  seps = [r for r in rows["towers"] if "prompt_separation" in r and r["view"] == frame_view]
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
              + tables(cfg.views[0][0], rows, summaries))
  return workdir.publish(results, markdown, lambda w: plot(w, cfg, rows, summaries))


# -- the study's page (docs/studies/pretrained.md, written by `python -m experiments.docs`) ------
_ROW_KINDS = ("pixels", "towers", "audit", "placement", "recovery")

_INTRO = """\
# Pretrained-model study: what a CLIP or SigLIP tower keeps of the traffic light

The caption studies train small towers on captions that never name the traffic light. This study
puts the same question to real checkpoints: is the light's colour decodable from a pretrained
tower, block by block, against the same architecture at random init and against raw pixels, and
does zero-shot classification see what a linear probe sees?

```bash
# offline default (no weights needed): a random-init ViT-B-32 on the lab's dashcam scenes at 224 px
python -m experiments.pretrained --flagfile=experiments/configs/pretrained.flags
# published weights (files as released; see docs/towers.md for formats and names)
python -m experiments.pretrained --flagfile=experiments/configs/pretrained.flags \\
    --checkpoints=ViT-B-32-quickgelu=weights/openai_vit_b_32.safetensors,\\
ViT-B-32=weights/laion2b_s34b_b79k.safetensors \\
    --tokenizer=weights/bpe_simple_vocab_16e6.txt.gz --workdir=workdir/pretrained_clip
python -m experiments.pretrained --flagfile=experiments/configs/pretrained.flags \\
    --checkpoints=ViT-B-16-SigLIP=weights/webli_en_b16_224.npz --tokenizer=weights/c4_en.model \\
    --workdir=workdir/pretrained_siglip
# a traffic-light dataset with boxes (TFDS detection dataset: one example per box)
python -m experiments.pretrained --flagfile=experiments/configs/pretrained.flags \\
    --dataset=traffic_lights --box_key=objects/bbox --label_key=objects/label \\
    --class_names=red,green --checkpoints=ViT-B-32-quickgelu=weights/openai_vit_b_32.safetensors
```

## What it measures

* **Towers**: every `--checkpoints` entry (`ARCH=PATH` or `ARCH=random`; ARCH a known name or a
  tower-config `.json`), each with its architecture at random init as the lower reference, and raw
  pixels downsampled to 32x32. Checkpoints that differ only in their data filter (open_clip's
  `commonpool_m_{clip,laion,image,text,basic}_s128m_b4k` ViT-B-32s) can be passed side by side.
* **Data**: the dashcam scenes (the light's box known; lamps of 2, 4 and 6 px in equal shares), any
  TFDS image-classification dataset (`--label_key`), or a TFDS detection dataset (`--box_key`, and
  `--label_key` a per-box label such as the light's colour; frames resized to `--frame_size`).
  Building such datasets from your own files: docs/data.md.
* **Views (controls)**: the whole frame resized to the tower (a distant light becomes a few pixels),
  a crop of 3x the box, the tight box (`--contexts`), each also in greyscale (colour gone, which
  lamp is lit kept); object-size strata on the whole frame.
* **Per (tower, view)**: label curves (`--label_sizes`; one draw of the labels per seed; mean ± 95%
  t-interval over draws) of ridge probes whose regularisation is chosen by leave-one-out CV inside
  the drawn labels, at every block's class token, mean patch token and the patch covering the
  object, at the pre-projection feature and at the embedding; zero-shot accuracy of a prompt
  ensemble (`--templates` x class names; needs `--tokenizer`); how well the text tower separates
  the class prompts (leave-one-template-out accuracy, cosine between class ensembles).
* **Per tower**: the invariance audit of a probe on the pre-projection feature (flip rate and
  relative logit change under shifts by whole and half patches, cyclic and edge-repeating, and
  90-degree rotations; a ViT is not exactly invariant even to whole-patch cyclic shifts, because
  its positional embeddings do not move); a placement map (the object pasted at every position of a
  grid on a grey canvas, probe trained at the centre); with `--recovery=lpft,lastblock,finetune`,
  post-hoc tuning of the tower on the labels against its frozen probe (a GPU is advisable).
* Outputs: `results.json`, `results.md`, `layers.png`, `label_curves.png`. Rows are resumable; a
  workdir made with other flags is refused; weights that do not fit their architecture, an unknown
  architecture, or a dataset without the needed labels or boxes stop before any work with one line.

The intervals are over label draws of one tower, one per layer and view, and are not corrected
for the number of layers: they describe the spread of a probe, not a family of tests.
"""

_CAPTIONS = """\
## Caption statistics: do real captions mention the traffic light?

The caption studies' premise, measured on real captions:
`python -m experiments.caption_stats --flagfile=experiments/configs/caption_stats.flags
--data_dir=DIR` reads COCO 2014 (`coco_captions`, the four Karpathy splits, prepared once with
`tfds build coco_captions --file_format=array_record`; reading needs no TensorFlow). For images with
a COCO traffic-light box it reports P(a caption mentions a traffic light), overall and per stratum
of the largest box's area (`--area_edges`, fraction of the image); P(the colour is named |
mentioned) and P(colour named | the image has a light); the same per caption; and images without a
box as the reference. `--flagfile=experiments/configs/caption_stats_corpus.flags
--caption_files=a.parquet,b.parquet --caption_column=caption` gives unconditional rates on
caption-only corpora (LAION `caption`/`TEXT`, DataComp `text`; `.txt` one caption per line; csv,
tsv). Patterns are flags (`--mention_pattern`, `--colour_pattern`; case-insensitive, whole words);
a colour is "named" within `--colour_window` words of a mention. Every cell is a rate with its 95%
interval (Wilson, or `--interval=clopper-pearson`) and its numerator and denominator. It is tested
on hand-counted captions (through `tfds.testing.mock_data`) and small caption files; no COCO or
LAION statistics are saved here, because this repository's machines cannot download them.
"""


def _at_full(summaries: dict, tower: str, view: str, layer: str) -> float:
  s = summaries[(tower, view)][layer]
  return s[_full(s)]["mean"]


def reading(results: dict, summaries: dict) -> str:
  """The page's reading, every number taken from ``results``."""
  towers = [r for r in results["towers"]]
  tower = towers[0]["tower"]
  views = results["views"]
  frame, crop, tight = views[0], views[1], views[2]
  grey_crop, grey_tight = f"{crop}_grey", f"{tight}_grey"
  full = lambda view, layer: _at_full(summaries, tower, view, layer)  # noqa: E731
  frame_layers = summaries[(tower, frame)]
  box = [full(frame, k) for k in frame_layers if k.endswith("_box")]
  others = [full(frame, k) for k in frame_layers if not k.endswith("_box")]
  pixels = lambda view: _at_full(summaries, "pixels", view, "pixels")  # noqa: E731
  n = max((int(k) for k in frame_layers["embedding"]), default=0)
  parts = []
  if not results["pretrained_weights"]:
    parts.append(f"**{results['note']}** The saved run describes the lower reference a "
                 "checkpoint is read against; no published weights can be downloaded on the "
                 "machines this repository was run on.\n")
  parts.append(
      f"With all {n} training labels (chance {towers[0]['chance']:.3f}), {tower} on the whole "
      f"frame: every class token, mean patch token, the pre-projection feature and the embedding "
      f"lie between {min(others):.3f} and {max(others):.3f}; only the patch covering the light "
      f"reads more ({min(box):.3f}-{max(box):.3f}). A crop of 3x the box: embedding "
      f"{full(crop, 'embedding'):.3f}; the tight box: {full(tight, 'embedding'):.3f}. In "
      f"greyscale the tight box stays at {full(grey_tight, 'embedding'):.3f} (which lamp is lit) "
      f"and the 3x crop gives {full(grey_crop, 'embedding'):.3f}. Raw 32x32 pixels: "
      f"{pixels(frame):.3f} on the whole frame, {pixels(crop):.3f} and {pixels(tight):.3f} on the "
      "crops. Downsampled to 32x32 pixels the whole frame no longer holds the light; at 224 px the "
      "tower's pooled features do not read it either, and only the patch over the light holds a "
      "little.")
  for a in results["audit"]:
    t = a["transforms"]
    shifts = {k: v for k, v in t.items() if k.startswith("shift")}
    rots = [v["flip_rate"] for k, v in t.items() if k.startswith("rot")]
    whole = [v for k, v in shifts.items() if k.startswith("shift1p")]
    half = [v for k, v in shifts.items() if k.startswith("shift0.5p")]
    parts.append(
        f"\nAudit of {a['tower']} ({a['view']} view, {a['examples']} scenes, probe accuracy "
        f"{a['accuracy']:.3f}): whole-patch shifts flip "
        f"{min(v['flip_rate'] for v in whole):.3f}-{max(v['flip_rate'] for v in whole):.3f} of the "
        f"predictions (relative logit change up to {max(v['error_mean'] for v in whole):.3f}), "
        f"half-patch shifts {min(v['flip_rate'] for v in half):.3f}-"
        f"{max(v['flip_rate'] for v in half):.3f} (up to {max(v['error_mean'] for v in half):.3f}), "
        f"rotations {min(rots):.3f}-{max(rots):.3f}.")
  return "## Reading\n\n" + "\n".join(parts) + "\n"


def document(results: dict[str, dict]) -> str:
  """docs/studies/pretrained.md from the saved offline run (see ``experiments.docs``)."""
  (name, saved), = results.items()
  rows = {k: saved[k] for k in _ROW_KINDS}
  summaries = {(r["tower"], r["view"]): summarize_row(r) for r in rows["pixels"] + rows["towers"]}
  return "\n".join([
      _INTRO, reading(saved, summaries),
      f"The run, its command, machine and wall time: `docs/results/{name}/` (RUN.md).\n",
      tables(saved["views"][0], rows, summaries), _CAPTIONS])
