"""Dashcam scenes: deterministic, independent attributes, visible light, clean attribute pairs."""
import itertools

import numpy as np
import pytest

from invariance.data import scenes

N = 4000


@pytest.fixture(scope="module")
def batch():
  return scenes.make_scenes(N, np.random.default_rng(0))


def test_shapes_dtype_range(batch):
  images, attrs, nuisance = batch
  assert images.shape == (N, 32, 32, 3) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert set(attrs) == set(scenes.ATTRIBUTES) and len(nuisance) == N
  for name, values in scenes.ATTRIBUTES.items():
    assert attrs[name].dtype == np.int32 and set(np.unique(attrs[name])) == set(range(len(values)))


def test_same_seed_same_bytes():
  a = scenes.make_scenes(64, np.random.default_rng(5))
  b = scenes.make_scenes(64, np.random.default_rng(5))
  c = scenes.make_scenes(64, np.random.default_rng(6))
  assert a[0].tobytes() == b[0].tobytes()
  assert all(a[1][k].tobytes() == b[1][k].tobytes() for k in scenes.ATTRIBUTES)
  assert a[0].tobytes() != c[0].tobytes()
  np.testing.assert_array_equal(scenes.render_scenes(a[1], a[2]), a[0])   # rendering is pure


@pytest.mark.parametrize("first, second", list(itertools.combinations(scenes.ATTRIBUTES, 2)))
def test_attributes_pairwise_independent(batch, first, second):
  _, attrs, _ = batch
  k1, k2 = len(scenes.ATTRIBUTES[first]), len(scenes.ATTRIBUTES[second])
  counts = np.zeros((k1, k2))
  np.add.at(counts, (attrs[first], attrs[second]), 1)
  expected = N / (k1 * k2)
  sigma = np.sqrt(N * (1 / (k1 * k2)) * (1 - 1 / (k1 * k2)))
  assert np.abs(counts - expected).max() < 5 * sigma, counts


def _check_layout(nuisance, size):
  lay = scenes.scene_layout(nuisance)
  for name, box in lay.items():
    assert (box[:, 0] >= 0).all() and (box[:, 1] <= size).all(), name
    assert (box[:, 2] >= 0).all() and (box[:, 3] <= size).all(), name
    # The pole is empty where a large lamp's housing reaches the horizon (scenes.sample_nuisance).
    assert (box[:, 1] >= box[:, 0] + (name != "pole")).all() and (box[:, 3] > box[:, 2]).all(), name
  light, car, ped = lay["light"], lay["car"], lay["pedestrian"]
  assert (light[:, 1] <= size // 2).all()                                             # upper part
  assert (lay["lamp_green"][:, 1] <= nuisance.horizon).all()                         # lamps in sky
  assert (car[:, 0] >= nuisance.horizon).all()                                        # on the road
  assert ((ped[:, 3] <= car[:, 2]) | (ped[:, 2] >= car[:, 3])).all()                  # beside car
  assert ((ped[:, 3] <= size // 4) | (ped[:, 2] >= size - size // 4)).all()          # at the side


def test_layout_light_up_pedestrian_at_side_all_on_canvas(batch):
  _check_layout(batch[2], 32)


@pytest.mark.parametrize("size", [33, 48, 64, 256])
def test_layout_other_sizes(size):
  nuisance = scenes.sample_nuisance(300, np.random.default_rng(size), size)
  _check_layout(nuisance, size)
  images = scenes.render_scenes(scenes.sample_attributes(8, np.random.default_rng(0)),
                                nuisance.take(slice(0, 8)))
  assert images.shape == (8, size, size, 3)


def test_no_attribute_is_a_fixed_pixel(batch):
  _, _, nuisance = batch
  lay = scenes.scene_layout(nuisance)
  for name in ("lamp_red", "lamp_green", "car", "pedestrian", "cloud0"):
    assert len(np.unique(lay[name][:, [0, 2]], axis=0)) >= 20, name
  assert np.ptp(nuisance.brightness) > 0.3 and len(np.unique(nuisance.horizon)) >= 3


def test_raw_pixels_carry_the_light(batch):
  images, attrs, nuisance = batch
  lay = scenes.scene_layout(nuisance)

  def mean_rgb(box):
    return np.stack([images[i, y0:y1, x0:x1].reshape(-1, 3).mean(0)
                     for i, (y0, y1, x0, x1) in enumerate(box)])

  red, green = mean_rgb(lay["lamp_red"]), mean_rgb(lay["lamp_green"])
  lit = np.where(attrs["light"][:, None] == 0, red, green)
  unlit = np.where(attrs["light"][:, None] == 0, green, red)
  channel = np.where(attrs["light"] == 0, 0, 1)
  rows = np.arange(N)
  assert (lit[rows, channel] > lit[rows, 1 - channel] + 0.25).all()   # R vs G (or G vs R)
  assert (lit.sum(1) > unlit.sum(1) + 0.3).all()


@pytest.mark.parametrize("attribute", list(scenes.ATTRIBUTES))
def test_pairs_differ_only_where_the_attribute_is(attribute):
  a, b, attrs_a, attrs_b, nuisance = scenes.scene_pairs(500, attribute, np.random.default_rng(3))
  for name in scenes.ATTRIBUTES:
    same = attrs_a[name] == attrs_b[name]
    assert (~same).all() if name == attribute else same.all(), name
  changed = np.abs(a - b).max(axis=-1) > 0                       # (N, H, W)
  assert changed.any(axis=(1, 2)).all()                          # every pair really differs
  inside = np.zeros_like(changed)
  rows, cols = np.arange(32)[None, :, None], np.arange(32)[None, None, :]
  for y0, y1, x0, x1 in (box.T[:, :, None, None] for box in scenes.attribute_boxes(attribute,
                                                                                  nuisance)):
    inside |= (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  assert not (changed & ~inside).any()
  # Control: a different attribute's boxes do not contain the change.
  other = "clouds" if attribute != "clouds" else "light"
  inside_other = np.zeros_like(changed)
  for y0, y1, x0, x1 in (box.T[:, :, None, None] for box in scenes.attribute_boxes(other,
                                                                                  nuisance)):
    inside_other |= (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  assert (changed & ~inside_other).any()


@pytest.mark.parametrize("lamp", [2, 4, 6])
def test_lamp_size_sets_what_a_light_flip_changes(lamp):
  """A light flip changes exactly the two lamps, 2 x lamp^2 pixels, both in the sky; the lamp
  size of another setting does not match that count (control)."""
  a, b, _, _, nuisance = scenes.scene_pairs(300, "light", np.random.default_rng(5), 32, lamp)
  changed = (np.abs(a - b).max(axis=-1) > 0).sum(axis=(1, 2))
  np.testing.assert_array_equal(changed, 2 * lamp * lamp)
  assert not (changed == 2 * (lamp + 2) ** 2).any()
  _check_layout(nuisance, 32)


@pytest.mark.parametrize("call, arg", [
    (lambda: scenes.make_scenes(4, np.random.default_rng(), lamp_size=7), "lamp_size"),
    (lambda: scenes.make_scenes(0, np.random.default_rng()), "n"),
    (lambda: scenes.make_scenes(4, np.random.default_rng(), size=16), "size"),
    (lambda: scenes.make_scenes(4, 1234), "rng"),
    (lambda: scenes.sample_nuisance(2.5, np.random.default_rng()), "n"),
    (lambda: scenes.scene_pairs(4, "weather", np.random.default_rng()), "attribute"),
    (lambda: scenes.render_scenes({"light": np.zeros(2, int)},
                                  scenes.sample_nuisance(2, np.random.default_rng())), "attrs"),
    (lambda: scenes.render_scenes(scenes.sample_attributes(3, np.random.default_rng()),
                                  scenes.sample_nuisance(2, np.random.default_rng())), "attrs"),
])
def test_bad_input_names_the_argument(call, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    call()
