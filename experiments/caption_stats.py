r"""Caption statistics: how often captions mention a traffic light, and name its colour.

    python -m experiments.caption_stats --flagfile=experiments/configs/caption_stats.flags
    python -m experiments.caption_stats --flagfile=experiments/configs/caption_stats_corpus.flags \
        --caption_files=laion_part0.parquet --caption_column=caption

The premise of the caption study (DESIGN.md, question 4; the seed's argument): captions rarely
mention a traffic light or its colour, so a CLIP trained on them may not encode it. Measured here

  * on a TFDS dataset with captions and labelled boxes (``coco_captions``, COCO 2014 with its 5
    captions per image): per image, P(any caption mentions it | the image has such a box), per
    stratum of the largest box's area and overall; P(the colour is named | mentioned) and
    P(colour named | the image has one); the same per caption; and images without a box as the
    reference (a mention there is a false positive of the pattern, or an unlabelled light);
  * on caption-only corpora (``--caption_files``: text, parquet, csv, tsv): the unconditional
    rates per caption.

Patterns, strata and the interval are flags (``experiments.caption_stats_config``); counting is
``invariance.data.caption_stats``, reading ``invariance.data.caption_sources``. Every input is
checked before any work. Rows (one per split, one per file: counts only) are resumable;
results.json, results.md and caption_stats.png are written at the end
(``experiments.caption_stats_report``).
"""
from __future__ import annotations

import os
import re
import time

from absl import logging

from experiments import caption_stats_report
from experiments import cli
from experiments import config
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.caption_stats_config import CaptionStatsConfig
from invariance.data import caption_sources
from invariance.data import caption_stats


def _key(kind: str, index: int, name: str) -> str:
  return f"{kind}{index}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', os.path.basename(name))}"


class _Progress:
  """A progress line every ``every`` records (and at the end), with the rate and an ETA."""

  def __init__(self, what: str, every: int):
    self.what, self.every, self.start, self.next = what, every, time.perf_counter(), every

  def __call__(self, done: int, total=None) -> None:
    if done < self.next and done != total:
      return
    self.next = (done // self.every + 1) * self.every
    seconds = time.perf_counter() - self.start
    eta = (f", ETA {seconds / done * (total - done):.0f} s" if total and done else "")
    of = f"/{total}" if total else ""
    logging.info("caption_stats: %s %d%s (%.0f/s%s)", self.what, done, of,
                 done / max(seconds, 1e-9), eta)


def split_row(cfg: CaptionStatsConfig, opened: caption_sources.OpenedSplit) -> dict:
  data = caption_sources.read_split(opened, cfg.limit or None,
                                    _Progress(f"{opened.name} {opened.split} images", cfg.log_every))
  flags = caption_stats.caption_flags(data.captions, cfg.patterns)
  groups = caption_stats.area_groups(data.largest_area, cfg.area_edges)
  return {"split": opened.split, "examples": len(data.largest_area),
          "boxes": int(data.num_boxes.sum()),
          "counts": caption_stats.image_counts(flags, data.caption_image, groups)}


def corpus_row(cfg: CaptionStatsConfig, path: str) -> dict:
  progress, counts, blank, seen = _Progress(f"{path} captions", cfg.log_every), None, 0, 0
  for chunk in caption_sources.read_caption_file(path, cfg.caption_column):
    kept, skipped = caption_sources.nonblank(chunk)
    blank, seen = blank + skipped, seen + len(chunk)
    got = caption_stats.caption_counts(caption_stats.caption_flags(kept, cfg.patterns))
    counts = got if counts is None else caption_stats.add_counts(counts, got)
    progress(seen)
  if not counts or not counts["captions"]:
    config.fail("caption_files", path, f"holds no caption ({blank} blank or null lines/values); "
                "allowed: a file with captions")
  return {"path": path, "column": None if path.endswith(".txt") else cfg.caption_column,
          "blank": blank, "counts": counts}


def main(cfg: CaptionStatsConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "caption_stats", config.identity(cfg), create=False)
  # Every split is opened (features, label, split checked) before the workdir is created.
  opened = [caption_sources.open_split(cfg.dataset, split, cfg.spec, cfg.data_dir)
            for split in (cfg.splits if cfg.dataset else ())]
  workdir.create()
  logging.info("caption_stats: %s%s; %d caption files; patterns %s", cfg.dataset or "no dataset",
               f" ({', '.join(f'{o.split}: {len(o)}' for o in opened)})" if opened else "",
               len(cfg.caption_files), cfg.patterns.describe())
  split_runs = [runner.Run(_key("split", i, o.split), lambda o=o: split_row(cfg, o))
                for i, o in enumerate(opened)]
  file_runs = [runner.Run(_key("file", i, path), lambda path=path: corpus_row(cfg, path))
               for i, path in enumerate(cfg.caption_files)]
  rows = runner.run_all(workdir, split_runs + file_runs)
  dataset_rows, corpus_rows = rows[:len(split_runs)], rows[len(split_runs):]
  markdown = caption_stats_report.publish(workdir, cfg, dataset_rows, corpus_rows)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(CaptionStatsConfig, main)
