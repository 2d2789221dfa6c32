"""Captions for dashcam scenes from a *curation policy*, and a tokenizer over their vocabulary.

Policies (the caption decides which invariances a contrastive model learns):
  * ``salient`` - only the car, e.g. "a black car in front of me" or "ITAP a black car";
  * ``full``    - the car, then every other attribute ("... with a red traffic light and no
    pedestrian and a clear sky");
  * ``mention`` - salient, plus ``attribute`` (default the light) with probability ``p``.

Randomness (paraphrase choice, mention coin) is drawn in the same way whatever the attributes, so
for a fixed rng state a caption is a function of the attributes its policy mentions only: under
``salient``, flipping the light never changes a caption.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Optional, Sequence

import numpy as np

from invariance.data.scenes import ATTRIBUTES, CAR_COLORS

POLICIES = ("salient", "full", "mention")
SALIENT_TEMPLATES = (
    "a {color} car in front of me",
    "ITAP a {color} car",
    "I took a picture of a {color} car",
    "a {color} car ahead",
    "driving behind a {color} car",
    "the {color} car in front of me",
)
PHRASES = {
    "light": ("a red traffic light", "a green traffic light"),
    "pedestrian": ("no pedestrian", "a pedestrian by the road"),
    "clouds": ("a clear sky", "a cloudy sky"),
}
MENTIONABLE = tuple(PHRASES)
# Words that can only come from mentioning the attribute (``red`` is also a car colour).
ATTRIBUTE_WORDS = {
    "light": frozenset({"traffic", "light", "green"}),
    "pedestrian": frozenset({"pedestrian"}),
    "clouds": frozenset({"sky", "clear", "cloudy"}),
}
PAD, UNK = "<pad>", "<unk>"


def _salient(color: int, template: int) -> str:
  return SALIENT_TEMPLATES[template].format(color=CAR_COLORS[color])


def _with(base: str, phrases: Sequence[str]) -> str:
  return base + " with " + " and ".join(phrases) if phrases else base


def _check_attrs(attrs, needed: Sequence[str]) -> int:
  if not isinstance(attrs, dict) or any(k not in attrs for k in needed):
    keys = sorted(attrs) if isinstance(attrs, dict) else type(attrs).__name__
    raise ValueError(f"attrs has keys {keys}; allowed: a dict with keys {', '.join(needed)}")
  sizes = {np.shape(attrs[k]) for k in needed}
  if len(sizes) != 1 or len(next(iter(sizes))) != 1:
    raise ValueError(f"attrs arrays must share one shape (N,), got shapes {sorted(sizes)}")
  return next(iter(sizes))[0]


def make_captions(attrs: dict[str, np.ndarray], policy: str, rng: np.random.Generator,
                  p: float = 0.5, attribute: str = "light") -> list[str]:
  """One caption per scene under ``policy`` (see module docstring); ``p`` is used by ``mention``."""
  if policy not in POLICIES:
    raise ValueError(f"policy={policy!r} is unknown; allowed: {', '.join(POLICIES)}")
  if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0.0 <= p <= 1.0:
    raise ValueError(f"p={p!r} is invalid; allowed: a probability in [0, 1]")
  if attribute not in MENTIONABLE:
    raise ValueError(f"attribute={attribute!r} cannot be mentioned; allowed: "
                     f"{', '.join(MENTIONABLE)}")
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng={rng!r} is invalid; allowed: a numpy Generator (np.random.default_rng)")
  needed = ("car_color",) + (MENTIONABLE if policy == "full" else
                             (attribute,) if policy == "mention" else ())
  n = _check_attrs(attrs, needed)
  templates = rng.integers(0, len(SALIENT_TEMPLATES), size=n)
  coins = rng.random(size=n)                                   # drawn under every policy
  captions = []
  for i in range(n):
    base = _salient(int(attrs["car_color"][i]), int(templates[i]))
    if policy == "full":
      captions.append(_with(base, [PHRASES[a][int(attrs[a][i])] for a in MENTIONABLE]))
    elif policy == "mention" and coins[i] < p:
      captions.append(_with(base, [PHRASES[attribute][int(attrs[attribute][i])]]))
    else:
      captions.append(base)
  return captions


def all_captions() -> list[str]:
  """Every caption any policy can produce (small: templates x attribute values)."""
  out = []
  for color, template in itertools.product(range(len(CAR_COLORS)), range(len(SALIENT_TEMPLATES))):
    base = _salient(color, template)
    out.append(base)
    out += [_with(base, [PHRASES[a][v]]) for a in MENTIONABLE for v in range(len(PHRASES[a]))]
    for values in itertools.product(*(range(len(ATTRIBUTES[a])) for a in MENTIONABLE)):
      out.append(_with(base, [PHRASES[a][v] for a, v in zip(MENTIONABLE, values)]))
  return out


def words(caption: str) -> list[str]:
  """Lower-cased whitespace tokens of a caption."""
  return caption.lower().split()


def mentions(caption: str, attribute: str) -> bool:
  """Whether a caption names ``attribute`` (any of its ATTRIBUTE_WORDS)."""
  if attribute not in ATTRIBUTE_WORDS:
    raise ValueError(f"attribute={attribute!r} is unknown; allowed: {', '.join(ATTRIBUTE_WORDS)}")
  return not ATTRIBUTE_WORDS[attribute].isdisjoint(words(caption))


def _default_vocab() -> tuple[str, ...]:
  return (PAD, UNK) + tuple(sorted({w for c in all_captions() for w in words(c)}))


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Word-level tokenizer over the fixed caption vocabulary; id 0 is padding, id 1 unknown."""

  vocab: tuple[str, ...] = dataclasses.field(default_factory=_default_vocab)

  def __post_init__(self):
    if self.vocab[:2] != (PAD, UNK) or len(set(self.vocab)) != len(self.vocab):
      raise ValueError(f"vocab must start with {PAD!r}, {UNK!r} and have no duplicates")

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def max_len(self) -> int:
    """Tokens in the longest caption any policy produces."""
    return max(len(words(c)) for c in all_captions())

  def encode(self, captions: Sequence[str], max_len: Optional[int] = None) -> np.ndarray:
    """int32 (N, max_len) ids, right-padded with 0; raises if a caption is longer than max_len."""
    max_len = self.max_len if max_len is None else max_len
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
      raise ValueError(f"max_len={max_len!r} is invalid; allowed: an int >= 1")
    if isinstance(captions, str):
      raise ValueError("captions is a single string; allowed: a list of strings")
    index = {w: i for i, w in enumerate(self.vocab)}
    ids = np.zeros((len(captions), max_len), np.int32)
    for i, caption in enumerate(captions):
      toks = words(caption)
      if len(toks) > max_len:
        raise ValueError(f"max_len={max_len} is shorter than caption {caption!r} "
                         f"({len(toks)} tokens); allowed: max_len >= {len(toks)}")
      ids[i, :len(toks)] = [index.get(w, 1) for w in toks]
    return ids

  def decode(self, ids) -> list[str]:
    """Captions (lower-cased) from ids, dropping padding."""
    return [" ".join(self.vocab[int(t)] for t in row if t != 0) for row in np.asarray(ids)]
