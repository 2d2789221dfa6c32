"""Tokenizers of the pretrained towers, read from local files only.

* ``ClipTokenizer``: CLIP's byte-level BPE (lower-cased, ftfy- and HTML-cleaned text; start- and
  end-of-text tokens; rows truncated to the context length with end-of-text kept; zero padding).
  The merges file (``bpe_simple_vocab_16e6.txt.gz``) comes from a path, or from an installed
  open_clip package found without importing it (so without torch).
* ``SiglipTokenizer``: big_vision's SigLIP text input: canonicalised text (lower case, punctuation
  removed), a SentencePiece model file (``c4_en``'s ``sentencepiece.model`` for the English
  SigLIP), end-of-sequence appended and kept when truncated ("sticky"), padded with id 1.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
import string
from typing import Optional, Sequence

import numpy as np

_CLIP_MERGES = 49152 - 256 - 2   # merges CLIP's vocabulary uses from the file
_CLIP_SPLIT = (r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
               r"[^\s\p{L}\p{N}]+")


def installed_openclip_vocab() -> Optional[str]:
  """Path of the merges file inside an installed open_clip, or None (open_clip is not imported)."""
  spec = importlib.util.find_spec("open_clip")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
  return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=None)
def byte_alphabet() -> tuple[tuple[str, ...], tuple[str, ...]]:
  """``(by_byte, vocab_order)``: the printable stand-in character of each byte 0..255 (printable
  Latin-1 bytes stand for themselves; the rest map in order to code points from 256 on), and the
  same characters in vocabulary order (printable bytes first, then the others)."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
  others = [b for b in range(256) if b not in keep]
  table = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(others)}
  return tuple(table[b] for b in range(256)), tuple(table[b] for b in keep + others)


def basic_clean(text: str) -> str:
  """ftfy's repair of mis-decoded text, HTML entities unescaped (twice), ends stripped."""
  import ftfy
  return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


class ClipTokenizer:
  """CLIP BPE: ``tokenizer(["a photo", ...])`` -> int32 ``[N, context_length]``."""

  def __init__(self, vocab_path: Optional[str] = None, context_length: int = 77):
    import regex
    vocab_path = vocab_path or installed_openclip_vocab()
    if vocab_path is None or not os.path.isfile(vocab_path):
      raise ValueError(f"CLIP BPE vocabulary {vocab_path!r} not found: pass the path of "
                       "bpe_simple_vocab_16e6.txt.gz (shipped with open_clip)")
    if context_length < 2:
      raise ValueError(f"context_length={context_length}: at least 2 (start and end of text)")
    with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")[1:_CLIP_MERGES + 1]
    merges = [tuple(line.split()) for line in lines if line]
    symbols = list(byte_alphabet()[1])
    symbols += [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    symbols += ["<start_of_text>", "<end_of_text>"]
    self.ids = {s: i for i, s in enumerate(symbols)}
    self.rank = {m: r for r, m in enumerate(merges)}
    self.sot, self.eot = self.ids["<start_of_text>"], self.ids["<end_of_text>"]
    self.vocab_size = len(symbols)
    self.context_length = context_length
    self._split = regex.compile(_CLIP_SPLIT, regex.IGNORECASE)
    self._cache: dict[str, list[int]] = {}

  def _word(self, word: str) -> list[int]:
    """BPE of one pre-split word: merge the best-ranked adjacent pair until none is known."""
    if word in self._cache:
      return self._cache[word]
    chars = "".join(byte_alphabet()[0][b] for b in word.encode("utf-8"))
    parts = list(chars[:-1]) + [chars[-1] + "</w>"]
    while len(parts) > 1:
      ranked = [(self.rank.get(pair, np.inf), pair) for pair in zip(parts, parts[1:])]
      best_rank, best = min(ranked, key=lambda rp: rp[0])
      if best_rank == np.inf:
        break
      merged, i = [], 0
      while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    ids = [self.ids[p] for p in parts]
    self._cache[word] = ids
    return ids

  def encode(self, text: str) -> list[int]:
    """Token ids of one text, without start/end tokens or padding."""
    out = []
    for word in self._split.findall(" ".join(basic_clean(text).split()).lower()):
      if word in ("<start_of_text>", "<end_of_text>"):
        out.append(self.ids[word])
      else:
        out.extend(self._word(word))
    return out

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = np.zeros((len(texts), self.context_length), np.int32)
    for row, text in enumerate(texts):
      ids = [self.sot, *self.encode(text), self.eot][:self.context_length]
      ids[-1] = self.eot
      out[row, :len(ids)] = ids
    return out


def canonicalize(text: str) -> str:
  """big_vision's prompt canonicalisation after ``basic_clean``: underscores to spaces, ASCII
  punctuation removed, lower case, single spaces (open_clip's ``clean="canonicalize"``)."""
  text = basic_clean(text).replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
  return " ".join(text.split())


class SiglipTokenizer:
  """SigLIP text input from a SentencePiece model file: ``[N, context_length]`` int32."""
  EOS, PAD = 1, 1

  def __init__(self, model_path: str, context_length: int = 64):
    if not model_path or not os.path.isfile(model_path):
      raise ValueError(f"SentencePiece model {model_path!r} not found: SigLIP needs its tokenizer "
                       "file (c4_en sentencepiece.model for the English models)")
    import sentencepiece
    self.sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
    self.context_length = context_length

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = np.full((len(texts), self.context_length), self.PAD, np.int32)
    for row, text in enumerate(texts):
      ids = [*self.sp.encode(canonicalize(text)), self.EOS][:self.context_length]
      ids[-1] = self.EOS
      out[row, :len(ids)] = ids
    return out
