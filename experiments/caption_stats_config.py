"""The caption-statistics study's config: every parameter declared once (``experiments.config``);
the absl flags of ``python -m experiments.caption_stats`` are generated from it."""
from __future__ import annotations

import dataclasses

from experiments import config
from invariance.data import caption_sources
from invariance.data import caption_stats

INTERVALS = ("wilson", "clopper-pearson")
COCO_SPLITS = ("train", "val", "test", "restval")     # Karpathy & Li's splits of COCO 2014

param = config.param


@dataclasses.dataclass(frozen=True)
class CaptionStatsConfig(config.StudyConfig):
  # Counting draws nothing at random: the shared seed field is kept (cli.run reads the config
  # fields every study has) but does not define results.
  seeds: tuple[int, ...] = param((0,), "Not used: counting captions draws nothing at random.",
                                 low=0, run_only=True)
  log_every: int = param(20000, "Records (images or captions) between progress lines.", low=1,
                         run_only=True)

  dataset: str = param("coco_captions", "TFDS dataset with captions and labelled boxes, "
                       "NAME[/CONFIG][:VERSION], read from --data_dir (never downloaded); '' for "
                       "none (only --caption_files).")
  splits: tuple[str, ...] = param(COCO_SPLITS, "Splits of --dataset whose images are counted "
                                  "(each image once).")
  limit: int = param(0, "Read only the first LIMIT examples of each split (0: all).", low=0)
  caption_feature: str = param("captions/text", "Feature holding an example's captions ('/' walks "
                               "nested features).")
  box_feature: str = param("objects/bbox", "Feature holding the boxes (normalised ymin, xmin, "
                           "ymax, xmax).")
  label_feature: str = param("objects/label", "ClassLabel feature of the boxes.")
  box_label: str = param("traffic light", "Class name of the boxes that make an image count as "
                         "having the object.")
  area_edges: tuple[float, ...] = param(
      (0.0, 0.001, 0.01, 0.1, 1.0), "Strata of the largest box's area (fraction of the image): "
      "[e0, e1), [e1, e2), ..., the last closed; strictly increasing from 0 to 1.", low=0, high=1)
  caption_files: tuple[str, ...] = param(
      (), "Caption-only corpora: .txt (one caption per line), or a column of .parquet / .csv / "
      ".tsv files (LAION, DataComp metadata); each file is reported on its own.", allow_empty=True)
  caption_column: str = param("caption", "Column of the captions in parquet / csv / tsv files "
                              "(LAION-400M: caption, LAION-5B: TEXT, DataComp: text).")
  mention_pattern: str = param(caption_stats.MENTION, "Regular expression of a mention (matched "
                               "case-insensitively between word boundaries).")
  colour_pattern: str = param(caption_stats.COLOUR, "Regular expression of a colour word "
                              "(case-insensitive, word boundaries).")
  colour_window: int = param(caption_stats.WINDOW, "A colour is named when a colour word is within "
                             "this many words of a mention in the same caption.", low=0)
  interval: str = param("wilson", "95% interval of every proportion (scipy.stats.binomtest's "
                        "proportion_ci; clopper-pearson is its 'exact').", choices=INTERVALS)

  @property
  def patterns(self) -> caption_stats.Patterns:
    return caption_stats.Patterns(self.mention_pattern, self.colour_pattern, self.colour_window)

  @property
  def spec(self) -> caption_sources.BoxCaptionSpec:
    return caption_sources.BoxCaptionSpec(self.caption_feature, self.box_feature,
                                          self.label_feature, self.box_label)

  def validate(self):
    if not self.dataset and not self.caption_files:
      config.fail("dataset", "''", "allowed: a TFDS dataset name, or --caption_files, or both")
    _as_flag(caption_stats.compile_words, "mention_pattern", self.mention_pattern)
    _as_flag(caption_stats.compile_words, "colour_pattern", self.colour_pattern)
    _as_flag(caption_stats.check_edges, self.area_edges, "area_edges")
    for path in self.caption_files:
      _as_flag(caption_sources.check_caption_file, path, self.caption_column)


def _as_flag(check, *args):
  """A library check whose one-line ValueError starts with ``name=value``: as a flag error."""
  try:
    return check(*args)
  except ValueError as e:
    raise config.FlagError(f"--{e}") from None

config.define_flags(CaptionStatsConfig)
