"""The dashcam studies' shared streams: one per split, reproducible, nested captions across p."""
import numpy as np

from invariance import dashcam
from invariance.data import captions as captions_lib


def test_each_split_has_its_own_reproducible_stream():
  data = dashcam.SeedData(0)
  train, again = data.scenes(dashcam.TRAIN, 16), dashcam.make_scenes(0, dashcam.TRAIN, 16)
  np.testing.assert_array_equal(train[0], again[0])
  assert data.scenes(dashcam.TRAIN, 16) is train                       # drawn once
  others = [data.scenes(k, 16)[0] for k in (dashcam.PROBE_TRAIN, dashcam.LABELLED)]
  others.append(dashcam.make_scenes(1, dashcam.TRAIN, 16)[0])           # another seed
  assert all(not np.allclose(train[0], x) for x in others)
  assert train[0].shape == (16, dashcam.IMAGE_SIZE, dashcam.IMAGE_SIZE, 3)


def test_captions_are_nested_in_p_and_streams_differ():
  data = dashcam.SeedData(3)
  mentions = lambda caps: np.array([captions_lib.mentions(c, "light") for c in caps])
  by_p = {p: mentions(data.captions(400, p, "light")) for p in (0.0, 0.1, 0.5, 1.0)}
  assert by_p[0.0].sum() == 0 and by_p[1.0].sum() == 400
  assert 0 < by_p[0.1].sum() < by_p[0.5].sum() < 400
  assert np.all(by_p[0.1] <= by_p[0.5])                 # who mentions at 0.1 also does at 0.5
  recaptioned = mentions(data.captions(400, 0.5, "light", dashcam.RECAPTIONS))
  assert not np.array_equal(recaptioned, by_p[0.5])     # control: another stream, other coins


def test_pairs_per_attribute_and_run_names():
  pairs = dashcam.make_pairs(0, 4)
  assert tuple(pairs) == dashcam.ATTRIBUTES
  assert all(a.shape == b.shape and not np.array_equal(a, b) for a, b in pairs.values())
  assert dashcam.run_key("clip", 0.0, 8) == "clip_p0_d8"
  assert dashcam.run_key("siglip", 0.001, 64) == "siglip_p0.001_d64"
  assert dashcam.run_key("clip", 0.0, 8, policy="swap", lamp_size=4, multi_positive=True,
                         steps=100) == "clip_p0_d8_swap_lamp4_multipos_t100"
  assert dashcam.prompts("light", "the traffic light ahead is {value}")[1] == (
      "the traffic light ahead is green")


def test_zero_shot_prompts_are_not_training_captions():
  captions = set(captions_lib.all_captions())
  for attribute, templates in dashcam.ZERO_SHOT.items():
    for template in templates:
      assert not captions & set(dashcam.prompts(attribute, template)), template
  assert dashcam.prompts("car_color", "ITAP a {value} car")[0] in captions    # control
