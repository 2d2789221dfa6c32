"""Captions for dashcam scenes from a *curation policy*, and a tokenizer over their vocabulary.

Policies (the caption decides which invariances a contrastive model learns):
  * ``salient`` - only the car, e.g. "a black car in front of me" or "ITAP a black car";
  * ``full``    - the car, then every other attribute ("... with a red traffic light and no
    pedestrian and a clear sky");
  * ``mention`` - salient, plus ``attribute`` (default the light) with probability ``p``;
  * ``swap``    - the roles swapped: every caption names ``attribute`` (e.g. "waiting at a green
    traffic light") and mentions the car and its colour only with probability ``p``
    ("... with a black car"): does a salient attribute that captions never name survive?

Every attribute value has several paraphrases (``PHRASES``; "a red traffic light", "a traffic light
showing red", "the signal at red") and the car several templates, so a batch holds many distinct
captions. Randomness (template, paraphrase and mention coin of every scene) is drawn in the same way
whatever the policy and attributes, so for a fixed rng state a caption is a function of the
attributes its policy mentions only: under ``salient``, flipping the light never changes a caption.
``mentions(caption, attribute)`` tells from words only that attribute's phrases use.

Colour confound: "red" is both a car colour and a light colour. ``disjoint_car_colors()`` are the
car colours whose names no light phrase uses (black, blue, white), and ``shared_words(colors)`` the
words that car captions of those colours share with the light's phrases (empty for the disjoint
ones, tested); a study that keeps only scenes with those cars has car and lamp colours disjoint in
words and, the generator's red car being the only red or green one, in pixels.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Optional, Sequence

import numpy as np

from invariance.data.scenes import ATTRIBUTES, CAR_COLORS

POLICIES = ("salient", "full", "mention", "swap")
SALIENT_TEMPLATES = (
    "a {color} car in front of me",
    "ITAP a {color} car",
    "I took a picture of a {color} car",
    "a {color} car ahead",
    "driving behind a {color} car",
    "the {color} car in front of me",
    "following a {color} car",
    "my view of a {color} car",
    "there is a {color} car ahead of us",
    "a {color} car just ahead",
    "stuck behind a {color} car",
    "dashcam shot of a {color} car",
)
# Paraphrases per attribute value (index = the attribute's value, scenes.ATTRIBUTES order).
PHRASES = {
    "light": (("a red traffic light", "a traffic light showing red", "the signal at red"),
              ("a green traffic light", "a traffic light showing green", "the signal at green")),
    "pedestrian": (("no pedestrian", "nobody on the sidewalk", "an empty sidewalk"),
                   ("a pedestrian by the road", "someone on the sidewalk", "a person walking by")),
    "clouds": (("a clear sky", "a sunny sky without clouds", "a blue sky"),
               ("a cloudy sky", "clouds overhead", "an overcast sky")),
}
# ``swap``: the always-named attribute's phrase fills a template; the car is an optional phrase.
SWAP_TEMPLATES = ("{phrase} ahead", "ITAP {phrase}", "waiting at {phrase}", "stopped at {phrase}")
CAR_PHRASES = ("a {color} car", "a {color} car in front")
MENTIONABLE = tuple(PHRASES)
PARAPHRASES = 3
PAD, UNK = "<pad>", "<unk>"


def words(caption: str) -> list[str]:
  """Lower-cased whitespace tokens of a caption."""
  return caption.lower().split()


def _words_of(texts) -> set:
  return {w for t in texts for w in words(t)}


def _attribute_words() -> dict[str, frozenset]:
  """Words only ``attribute``'s phrases use (not the car's templates, not another attribute's
  phrases; ``red`` is also a car colour), and ``car`` for the car (``swap`` captions)."""
  car = _words_of(SALIENT_TEMPLATES + SWAP_TEMPLATES + CAR_PHRASES + CAR_COLORS + ("with", "and"))
  phrase_words = {a: _words_of(itertools.chain(*v)) for a, v in PHRASES.items()}
  out = {a: frozenset(w - car - set().union(*(phrase_words[b] for b in PHRASES if b != a)))
         for a, w in phrase_words.items()}
  return {**out, "car_color": frozenset({"car"})}


ATTRIBUTE_WORDS = _attribute_words()


def disjoint_car_colors() -> tuple[int, ...]:
  """Indices into ``CAR_COLORS`` of the car colours whose names are not light colours."""
  lamp = set(ATTRIBUTES["light"])
  return tuple(i for i, c in enumerate(CAR_COLORS) if c not in lamp)


def shared_words(car_colors, attribute: str = "light") -> frozenset:
  """Words that car captions (``salient`` templates and ``swap``'s car phrases) with the colours
  ``car_colors`` (indices into ``CAR_COLORS``) share with ``attribute``'s phrases, template words
  aside (``a``, ``the``, ...): the colour words a probe or a zero-shot prompt could confuse."""
  if attribute not in PHRASES:
    raise ValueError(f"attribute={attribute!r} is unknown; allowed: {', '.join(PHRASES)}")
  bad = [c for c in car_colors if isinstance(c, bool) or c not in range(len(CAR_COLORS))]
  if bad:
    raise ValueError(f"car_colors={list(car_colors)}: allowed: indices in [0, {len(CAR_COLORS)})")
  templates = SALIENT_TEMPLATES + CAR_PHRASES
  car = _words_of(t.format(color=CAR_COLORS[c]) for t in templates for c in car_colors)
  plain = _words_of(t.format(color="") for t in templates)
  return frozenset((car - plain) & _words_of(itertools.chain(*PHRASES[attribute])))


def _phrase(attribute: str, value: int, paraphrase: int) -> str:
  return PHRASES[attribute][value][paraphrase]


def _salient(color: int, template: int) -> str:
  return SALIENT_TEMPLATES[template % len(SALIENT_TEMPLATES)].format(color=CAR_COLORS[color])


def _swapped(attribute: str, value: int, paraphrase: int, template: int) -> str:
  return SWAP_TEMPLATES[template % len(SWAP_TEMPLATES)].format(
      phrase=_phrase(attribute, value, paraphrase))


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
  """One caption per scene under ``policy`` (see module docstring); ``p`` is used by ``mention``
  (the probability of mentioning ``attribute``) and ``swap`` (of mentioning the car)."""
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
                             (attribute,) if policy in ("mention", "swap") else ())
  n = _check_attrs(attrs, needed)
  # Drawn under every policy, in this order: template, mention coin, one paraphrase per attribute.
  templates = rng.integers(0, len(SALIENT_TEMPLATES) * len(SWAP_TEMPLATES), size=n)
  coins = rng.random(size=n)
  para = {a: rng.integers(0, PARAPHRASES, size=n) for a in MENTIONABLE + ("car_color",)}
  captions = []
  for i in range(n):
    color, t = int(attrs["car_color"][i]), int(templates[i])
    phrase = {a: _phrase(a, int(attrs[a][i]), int(para[a][i])) for a in needed[1:]}
    if policy == "swap":
      car = [CAR_PHRASES[int(para["car_color"][i]) % len(CAR_PHRASES)].format(
          color=CAR_COLORS[color])] if coins[i] < p else []
      captions.append(_with(_swapped(attribute, int(attrs[attribute][i]), int(para[attribute][i]),
                                     t // len(SALIENT_TEMPLATES)), car))
      continue
    base = _salient(color, t)
    if policy == "full":
      captions.append(_with(base, [phrase[a] for a in MENTIONABLE]))
    elif policy == "mention" and coins[i] < p:
      captions.append(_with(base, [phrase[attribute]]))
    else:
      captions.append(base)
  return captions


def _values(attribute: str):
  return itertools.product(range(len(ATTRIBUTES[attribute])), range(PARAPHRASES))


@functools.lru_cache(maxsize=1)
def _all_captions() -> tuple[str, ...]:
  out = []
  for color, template in itertools.product(range(len(CAR_COLORS)), range(len(SALIENT_TEMPLATES))):
    base = _salient(color, template)
    out.append(base)
    out += [_with(base, [_phrase(a, v, k)]) for a in MENTIONABLE for v, k in _values(a)]
    for choice in itertools.product(*(_values(a) for a in MENTIONABLE)):
      out.append(_with(base, [_phrase(a, v, k) for a, (v, k) in zip(MENTIONABLE, choice)]))
  for a in MENTIONABLE:
    for (v, k), t in itertools.product(_values(a), range(len(SWAP_TEMPLATES))):
      base = _swapped(a, v, k, t)
      out.append(base)
      out += [_with(base, [c.format(color=color)]) for c in CAR_PHRASES for color in CAR_COLORS]
  return tuple(out)


def all_captions() -> list[str]:
  """Every caption any policy can produce (templates x paraphrases x attribute values)."""
  return list(_all_captions())


def mentions(caption: str, attribute: str) -> bool:
  """Whether a caption names ``attribute`` (any of its ATTRIBUTE_WORDS)."""
  if attribute not in ATTRIBUTE_WORDS:
    raise ValueError(f"attribute={attribute!r} is unknown; allowed: {', '.join(ATTRIBUTE_WORDS)}")
  return not ATTRIBUTE_WORDS[attribute].isdisjoint(words(caption))


@functools.lru_cache(maxsize=1)
def _default_vocab() -> tuple[str, ...]:
  return (PAD, UNK) + tuple(sorted({w for c in _all_captions() for w in words(c)}))


@functools.lru_cache(maxsize=1)
def _longest_caption() -> int:
  return max(len(words(c)) for c in _all_captions())


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
    return _longest_caption()

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
