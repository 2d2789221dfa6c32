"""Tokenizers against open_clip's on fixture strings (ids saved by scripts/make_pretrained_fixtures.py)."""
import json
import os

import numpy as np
import pytest

from invariance.pretrained import tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained")


def _fixture(name):
  with open(os.path.join(FIXTURES, name)) as f:
    return json.load(f)


@pytest.mark.parametrize("context", [77, 8])
def test_clip_bpe_equals_open_clip(context):
  ref = _fixture("clip_tokens.json")
  tok = tokenizer.ClipTokenizer(os.path.join(FIXTURES, "bpe_vocab_head.txt.gz"), context)
  assert tok.vocab_size == 512 + ref["merges"] + 2
  ids = tok(ref["texts"])
  np.testing.assert_array_equal(ids, np.asarray(ref["ids"][str(context)]))
  # truncated rows keep end-of-text last; the 100-word text is truncated at both lengths
  long_row = ids[ref["texts"].index(next(t for t in ref["texts"] if t.startswith("long")))]
  assert long_row[-1] == tok.eot and long_row[0] == tok.sot


def test_clip_bpe_control_without_sticky_end_of_text_differs():
  ref = _fixture("clip_tokens.json")
  tok = tokenizer.ClipTokenizer(os.path.join(FIXTURES, "bpe_vocab_head.txt.gz"), 77)
  plain = np.zeros((len(ref["texts"]), 8), np.int32)
  for row, text in enumerate(ref["texts"]):
    ids = [tok.sot, *tok.encode(text), tok.eot][:8]
    plain[row, :len(ids)] = ids
  assert not np.array_equal(plain, np.asarray(ref["ids"]["8"]))


@pytest.mark.parametrize("context", [16, 6])
def test_siglip_sentencepiece_equals_open_clip_hf_tokenizer(context):
  ref = _fixture("siglip_tokens.json")
  tok = tokenizer.SiglipTokenizer(os.path.join(FIXTURES, "spm_tiny.model"), context)
  np.testing.assert_array_equal(tok(ref["texts"]), np.asarray(ref["ids"][str(context)]))


def test_canonicalize():
  assert tokenizer.canonicalize("  A Red_Light, at night!! ") == "a red light at night"


def test_missing_vocabulary_files_are_one_line(tmp_path):
  with pytest.raises(ValueError, match="bpe_simple_vocab_16e6.txt.gz") as e:
    tokenizer.ClipTokenizer(str(tmp_path / "none.gz"))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="SentencePiece model") as e:
    tokenizer.SiglipTokenizer(str(tmp_path / "none.model"))
  assert "\n" not in str(e.value)
