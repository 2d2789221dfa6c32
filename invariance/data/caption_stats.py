"""How often captions mention an attribute: word patterns, per-caption flags and additive counts.

The premise of the caption study (DESIGN.md, question 4) is that captions rarely mention a traffic
light, or its colour, even when one is in the picture. This module counts it; reading datasets is
``invariance.data.caption_sources``, intervals and tables are the study's
(``experiments.caption_stats``).

* ``Patterns`` - the mention and colour word patterns (regular expressions, matched
  case-insensitively between word boundaries: ``\\b(?:pattern)\\b``) and the colour window.
* ``caption_flags`` - per caption: ``mention`` (the mention pattern matches), ``colour_near`` (a
  colour word within ``window`` words of a mention, in the same caption: "a red traffic light",
  "the traffic light is green") and ``colour_any`` (a caption that mentions the light and has a
  colour word anywhere: an upper bound, since "a red bus at a traffic light" counts).
* ``area_groups`` - images grouped by their largest box's area (a fraction of the image):
  ``with_box``, one stratum per pair of ``edges`` ([lo, hi), the last one closed), ``without_box``,
  ``all``.
* ``image_counts`` / ``caption_counts`` - plain integer counts (numerators and denominators), so
  counts of several splits or files add up (``add_counts``).

numpy and ``re`` only: no absl, no TFDS.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

# "traffic light(s)", "traffic signal(s)", "stop light(s)", with a space, a hyphen or neither.
MENTION = r"traffic[ -]?lights?|traffic[ -]?signals?|stop[ -]?lights?"
COLOUR = r"red|green|amber|yellow"
WINDOW = 3
FLAGS = ("mention", "colour_near", "colour_any")
_WORD = re.compile(r"\w+")


def compile_words(arg: str, pattern: str) -> re.Pattern:
  """``pattern`` between word boundaries, case-insensitive; a bad or empty-matching pattern is a
  one-line ``ValueError`` naming ``arg``."""
  if not isinstance(pattern, str) or not pattern.strip():
    raise ValueError(f"{arg}={pattern!r} is invalid; allowed: a non-empty regular expression")
  try:
    compiled = re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)
  except re.error as e:
    raise ValueError(f"{arg}={pattern!r} is not a regular expression ({e}); allowed: a Python "
                     "regular expression such as 'traffic lights?|stop ?lights?'") from None
  if re.fullmatch(rf"(?:{pattern})", "") is not None:
    raise ValueError(f"{arg}={pattern!r} matches the empty string (so every caption would count); "
                     "allowed: a pattern that needs at least one character")
  return compiled


@dataclasses.dataclass(frozen=True)
class Patterns:
  """What counts as a mention and as a named colour (see module docstring); checked on creation."""

  mention: str = MENTION
  colour: str = COLOUR
  window: int = WINDOW

  def __post_init__(self):
    compile_words("mention", self.mention)
    compile_words("colour", self.colour)
    if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
      raise ValueError(f"window={self.window!r} is invalid; allowed: an int >= 0 (words between "
                       "a colour word and a mention)")

  def describe(self) -> dict:
    """The patterns as they are matched (reported beside every count)."""
    return {"mention": compile_words("mention", self.mention).pattern,
            "colour": compile_words("colour", self.colour).pattern, "window_words": self.window,
            "flags": "case-insensitive, word boundaries"}


def _near(text: str, mentions: list, colours: list, window: int) -> bool:
  for m in mentions:
    for c in colours:
      lo, hi = sorted((m, c))           # overlapping spans leave an empty gap: 0 words
      if len(_WORD.findall(text[lo[1]:hi[0]])) <= window:
        return True
  return False


def caption_flags(captions: Sequence[str], patterns: Patterns) -> dict[str, np.ndarray]:
  """Per caption, bool (N,) arrays ``mention``, ``colour_near``, ``colour_any`` (module docstring)."""
  mention_re = compile_words("mention", patterns.mention)
  colour_re = compile_words("colour", patterns.colour)
  out = {k: np.zeros(len(captions), bool) for k in FLAGS}
  for i, text in enumerate(captions):
    mentions = [m.span() for m in mention_re.finditer(text)]
    if not mentions:
      continue
    colours = [c.span() for c in colour_re.finditer(text)]
    out["mention"][i] = True
    out["colour_any"][i] = bool(colours)
    out["colour_near"][i] = _near(text, mentions, colours, patterns.window)
  return out


def check_edges(edges: Sequence[float], arg: str = "edges") -> tuple[float, ...]:
  """Area strata edges: at least two, strictly increasing, from 0 to 1 (every box falls in one)."""
  edges = tuple(float(e) for e in edges)
  if (len(edges) < 2 or edges[0] != 0.0 or edges[-1] != 1.0
      or any(b <= a for a, b in zip(edges, edges[1:]))):
    given = ",".join(f"{e:g}" for e in edges)
    raise ValueError(f"{arg}={given} are impossible strata; allowed: at least two strictly "
                     "increasing area fractions from 0 to 1, e.g. 0,0.001,0.01,0.1,1")
  return edges


def stratum_names(edges: Sequence[float]) -> list[str]:
  edges = check_edges(edges)
  last = len(edges) - 2
  return [f"[{lo:g}, {hi:g}{']' if i == last else ')'}"
          for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]


def area_groups(largest_area: np.ndarray, edges: Sequence[float]) -> dict[str, np.ndarray]:
  """Image groups (bool (I,) each, in report order) from the largest box area of each image
  (nan: the image has no such box)."""
  edges = check_edges(edges)
  area = np.asarray(largest_area, np.float64)
  has = ~np.isnan(area)
  if np.any((area[has] < 0) | (area[has] > 1)):
    raise ValueError("box areas must be fractions of the image in [0, 1]; allowed: normalised "
                     "boxes (ymin, xmin, ymax, xmax) in [0, 1]")
  index = np.clip(np.searchsorted(edges, np.where(has, area, 0.0), side="right") - 1, 0,
                  len(edges) - 2)
  groups = {"with_box": has}
  for i, name in enumerate(stratum_names(edges)):
    groups[name] = has & (index == i)
  groups["without_box"] = ~has
  groups["all"] = np.ones_like(has)
  return groups


def image_counts(flags: dict[str, np.ndarray], caption_image: np.ndarray,
                 groups: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
  """Per group: ``images``, ``captions`` and, for each flag, ``images_<flag>`` (images with at
  least one such caption) and ``captions_<flag>``. ``caption_image`` is each caption's image
  index (captions of one image may be anywhere in the list)."""
  caption_image = np.asarray(caption_image, np.int64)
  num_images = len(next(iter(groups.values())))
  if caption_image.size and (caption_image.min() < 0 or caption_image.max() >= num_images):
    raise ValueError(f"caption_image holds indices outside [0, {num_images}); allowed: the index "
                     "of each caption's image")
  per_image = {}
  for k in FLAGS:
    any_ = np.zeros(num_images, bool)
    np.logical_or.at(any_, caption_image, flags[k])
    per_image[k] = any_
  out = {}
  for name, member in groups.items():
    member = np.asarray(member, bool)
    of_caption = member[caption_image]
    counts = {"images": int(member.sum()), "captions": int(of_caption.sum())}
    for k in FLAGS:
      counts[f"images_{k}"] = int((per_image[k] & member).sum())
      counts[f"captions_{k}"] = int((flags[k] & of_caption).sum())
    out[name] = counts
  return out


def caption_counts(flags: dict[str, np.ndarray]) -> dict[str, int]:
  """``captions`` and ``captions_<flag>`` of a caption-only corpus."""
  out = {"captions": int(len(flags["mention"]))}
  out.update({f"captions_{k}": int(flags[k].sum()) for k in FLAGS})
  return out


def add_counts(a: dict, b: dict) -> dict:
  """The sum of two (nested) count dicts with the same keys."""
  if a.keys() != b.keys():
    raise ValueError(f"count dicts differ in keys ({sorted(a.keys() ^ b.keys())}); allowed: counts "
                     "made with the same groups")
  return {k: add_counts(a[k], b[k]) if isinstance(a[k], dict) else a[k] + b[k] for k in a}
