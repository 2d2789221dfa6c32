"""Caption policies: salient never leaks the light (with controls that show the check can fail)."""
import numpy as np
import pytest

from invariance.data import captions, scenes

N = 4000


@pytest.fixture(scope="module")
def attrs():
  return scenes.sample_attributes(N, np.random.default_rng(0))


def _leaks(tok, caps, attribute="light"):
  """Per caption: does any token (as ids, after the tokenizer) belong to the attribute's words?"""
  ids = tok.encode(caps)
  word_ids = [tok.vocab.index(w) for w in captions.ATTRIBUTE_WORDS[attribute]]
  return np.isin(ids, word_ids).any(axis=1)


def test_same_seed_same_captions(attrs):
  for policy in captions.POLICIES:
    a = captions.make_captions(attrs, policy, np.random.default_rng(1), p=0.5)
    b = captions.make_captions(attrs, policy, np.random.default_rng(1), p=0.5)
    assert a == b and len(a) == N
  assert (captions.make_captions(attrs, "salient", np.random.default_rng(2))
          != captions.make_captions(attrs, "salient", np.random.default_rng(1)))


def test_salient_never_mentions_the_light_and_the_check_can_fail(attrs):
  tok = captions.Tokenizer()
  salient = captions.make_captions(attrs, "salient", np.random.default_rng(1))
  full = captions.make_captions(attrs, "full", np.random.default_rng(1))
  assert not _leaks(tok, salient).any()
  assert not any(captions.mentions(c, "light") for c in salient)
  assert _leaks(tok, full).all()                                 # control: the check fires
  assert all(captions.mentions(c, "light") for c in full)
  for attribute in ("pedestrian", "clouds"):                     # salient mentions only the car
    assert not _leaks(tok, salient, attribute).any() and _leaks(tok, full, attribute).all()


def test_salient_captions_are_invariant_to_the_light(attrs):
  """Flip every light: salient captions are unchanged, full captions all change (control)."""
  flipped = scenes.with_attribute(attrs, "light", 1 - attrs["light"])
  for policy, invariant in (("salient", True), ("full", False), ("mention", False)):
    a = captions.make_captions(attrs, policy, np.random.default_rng(4), p=1.0)
    b = captions.make_captions(flipped, policy, np.random.default_rng(4), p=1.0)
    same = np.array([x == y for x, y in zip(a, b)])
    assert same.all() if invariant else not same.any(), policy


def test_salient_names_the_car_with_paraphrases(attrs):
  caps = captions.make_captions(attrs, "salient", np.random.default_rng(1))
  for c, color in zip(caps, attrs["car_color"]):
    assert scenes.CAR_COLORS[color] in captions.words(c) and "car" in captions.words(c)
  assert len({c.replace(scenes.CAR_COLORS[k], "{color}") for c, k in zip(caps, attrs["car_color"])}
             ) == len(captions.SALIENT_TEMPLATES)
  assert "ITAP a black car" in caps and "a black car in front of me" in caps


def test_mention_probability(attrs):
  for p in (0.0, 0.3, 1.0):
    caps = captions.make_captions(attrs, "mention", np.random.default_rng(1), p=p)
    rate = np.mean([captions.mentions(c, "light") for c in caps])
    assert abs(rate - p) < 5 * np.sqrt(0.25 / N) + 1e-9, (p, rate)
  same = captions.make_captions(attrs, "mention", np.random.default_rng(1), p=0.0)
  assert same == captions.make_captions(attrs, "salient", np.random.default_rng(1))


def test_mention_other_attribute(attrs):
  caps = captions.make_captions(attrs, "mention", np.random.default_rng(1), p=1.0,
                                attribute="pedestrian")
  assert all(captions.mentions(c, "pedestrian") for c in caps)
  assert not any(captions.mentions(c, "light") for c in caps)
  for c, ped in zip(caps[:50], attrs["pedestrian"][:50]):
    assert c.endswith(captions.PHRASES["pedestrian"][ped])


def test_swap_names_the_light_and_the_car_only_with_probability_p(attrs):
  """Role swap: every caption names the light; the car (and its colour) with probability p. At
  p = 0 flipping the car colour never changes a caption; at p = 1 it changes every one (control)."""
  for p in (0.0, 0.3, 1.0):
    caps = captions.make_captions(attrs, "swap", np.random.default_rng(1), p=p)
    assert all(captions.mentions(c, "light") for c in caps)
    rate = np.mean([captions.mentions(c, "car_color") for c in caps])
    assert abs(rate - p) < 5 * np.sqrt(0.25 / N) + 1e-9, (p, rate)
  recolored = scenes.with_attribute(attrs, "car_color", (attrs["car_color"] + 1) % 4)
  for p, invariant in ((0.0, True), (1.0, False)):
    a = captions.make_captions(attrs, "swap", np.random.default_rng(4), p=p)
    b = captions.make_captions(recolored, "swap", np.random.default_rng(4), p=p)
    same = np.array([x == y for x, y in zip(a, b)])
    assert same.all() if invariant else not same.any(), p


def test_every_phrase_is_recognisable_and_paraphrases_are_used(attrs):
  """Each paraphrase of each value carries a word only its attribute uses (so ``mentions`` sees
  it), and all paraphrases occur; a phrase made of template words would not be seen (control)."""
  for attribute, values in captions.PHRASES.items():
    for phrase in (ph for v in values for ph in v):
      assert captions.mentions(phrase, attribute), (attribute, phrase)
  assert not captions.mentions("a red car ahead", "light")
  caps = captions.make_captions(attrs, "full", np.random.default_rng(1))
  used = {ph for ph in (ph for v in captions.PHRASES["light"] for ph in v) if any(ph in c for c in caps)}
  assert len(used) == 2 * captions.PARAPHRASES


def test_tokenizer_fixed_length_padding_and_round_trip():
  tok = captions.Tokenizer()
  every = captions.all_captions()
  ids = tok.encode(every)
  assert ids.dtype == np.int32 and ids.shape == (len(every), tok.max_len)
  assert ids.max() < tok.vocab_size and not (ids == 1).any()      # no unknown words
  lengths = np.array([len(captions.words(c)) for c in every])
  np.testing.assert_array_equal((ids != 0).sum(1), lengths)      # right-padded with 0
  assert tok.decode(ids) == [c.lower() for c in every]
  assert tok.encode(["ITAP a black car"], max_len=6).tolist() == [
      [tok.vocab.index(w) for w in ("itap", "a", "black", "car")] + [0, 0]]
  assert tok.encode(["a purple car"], max_len=3)[0, 1] == 1      # unknown word -> id 1


@pytest.mark.parametrize("call, arg", [
    (lambda a: captions.make_captions(a, "verbose", np.random.default_rng()), "policy"),
    (lambda a: captions.make_captions(a, "mention", np.random.default_rng(), p=-0.1), "p"),
    (lambda a: captions.make_captions(a, "mention", np.random.default_rng(), p=1.5), "p"),
    (lambda a: captions.make_captions(a, "mention", np.random.default_rng(), p=float("nan")), "p"),
    (lambda a: captions.make_captions(a, "mention", np.random.default_rng(), attribute="car_color"),
     "attribute"),
    (lambda a: captions.make_captions(a, "full", 3), "rng"),
    (lambda a: captions.make_captions({"car_color": a["car_color"]}, "full",
                                      np.random.default_rng()), "attrs"),
    (lambda a: captions.Tokenizer().encode(["a black car in front of me"], max_len=3), "max_len"),
    (lambda a: captions.Tokenizer().encode(["a black car"], max_len=0), "max_len"),
    (lambda a: captions.mentions("a black car", "weather"), "attribute"),
])
def test_bad_input_names_the_argument(attrs, call, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    call(attrs)


def test_disjoint_car_colours_share_no_word_with_the_light():
  keep = captions.disjoint_car_colors()
  assert [scenes.CAR_COLORS[i] for i in keep] == ["black", "blue", "white"]
  assert captions.shared_words(keep) == frozenset()
  assert captions.shared_words(range(len(scenes.CAR_COLORS))) == {"red"}   # control: red is shared
  assert captions.shared_words(keep, "pedestrian") == frozenset()
  # and in pixels: every kept car colour is far from both lamp colours (the red car is not)
  dist = lambda i: np.abs(scenes.CAR_RGB[i][None] - scenes.LAMP_RGB).max(axis=1).min()
  assert min(dist(i) for i in keep) > 0.5 and dist(1) < 0.2
  with pytest.raises(ValueError, match="car_colors"):
    captions.shared_words([7])
