"""Curation: placements stay in their support and on the canvas; the support as group elements."""
import numpy as np
import pytest

from invariance import groups
from invariance.data import curation, sources

CANVAS = (24, 24)
GLYPH = (8, 8)
# Region (rows, cols) each named support must keep every glyph pixel in, on a 24x24 canvas.
REGIONS = {"all": ((0, 24), (0, 24)), "top": ((0, 12), (0, 24)), "bottom": ((12, 24), (0, 24)),
           "left": ((0, 24), (0, 12)), "right": ((0, 24), (12, 24)),
           ((3, 5), (10, 17)): ((3, 12), (10, 24))}


def _glyphs(n, seed=0):
  """Glyphs with every pixel > 0, so the canvas's non-zero bounding box is the glyph's box."""
  return np.random.default_rng(seed).uniform(0.1, 1.0, (n, *GLYPH, 1)).astype(np.float32)


def _bbox(canvas_HWC):
  rows, cols = np.nonzero(canvas_HWC[..., 0])
  return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  """The real digits (the TFDS dataset built into a temporary directory, not the user's)."""
  return sources.load_classification("digits", data_dir=str(tmp_path_factory.mktemp("tfds")))


@pytest.mark.parametrize("support", list(REGIONS), ids=str)
def test_placed_pixels_inside_support_and_canvas(support):
  glyphs = _glyphs(300)
  canvases, positions = curation.place(glyphs, CANVAS, support, np.random.default_rng(1))
  assert canvases.shape == (300, *CANVAS, 1) and canvases.dtype == np.float32
  assert positions.shape == (300, 2) and positions.dtype == np.int32
  (r0, r1), (c0, c1) = REGIONS[support]
  for canvas, glyph, (r, c) in zip(canvases, glyphs, positions):
    assert _bbox(canvas) == (r, r + 8, c, c + 8)             # the glyph sits where recorded...
    np.testing.assert_array_equal(canvas[r:r + 8, c:c + 8], glyph)
    assert r0 <= r and r + 8 <= r1 and c0 <= c and c + 8 <= c1  # ...inside the support
  assert len(np.unique(positions, axis=0)) >= 14                # and positions really vary


def test_real_digits_stay_in_bottom_half(digits):
  canvases, _ = curation.place(digits.test_images, CANVAS, "bottom", np.random.default_rng(0))
  rows = np.nonzero(canvases.any(axis=(2, 3)))[1]
  assert rows.min() >= 12 and rows.max() < 24


def test_positions_cover_exactly_the_support():
  pos = curation.placement_positions("bottom", CANVAS, GLYPH)
  assert len(pos) == 5 * 17                                     # rows 12..16, cols 0..16
  assert pos[:, 0].min() == 12 and pos[:, 0].max() == 16 and pos[:, 1].max() == 16
  odd = curation.placement_positions("top", (17, 9), (4, 3))    # odd canvas: middle row in neither
  assert odd[:, 0].max() + 4 <= 8


def test_same_seed_same_bytes():
  glyphs = _glyphs(50)
  a = curation.place(glyphs, CANVAS, "left", np.random.default_rng(7))
  b = curation.place(glyphs, CANVAS, "left", np.random.default_rng(7))
  c = curation.place(glyphs, CANVAS, "left", np.random.default_rng(8))
  assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
  assert a[1].tobytes() != c[1].tobytes()


def test_support_elements_are_translations_of_a_glyph_at_the_origin():
  group = groups.Translations(*CANVAS)
  elements = curation.support_elements("bottom", CANVAS, GLYPH)
  pos = curation.placement_positions("bottom", CANVAS, GLYPH)
  np.testing.assert_array_equal(elements, np.sort(np.asarray(group.element(pos[:, 0], pos[:, 1]))))
  glyphs = _glyphs(4)
  canvases, positions = curation.place(glyphs, CANVAS, "bottom", np.random.default_rng(2))
  at_origin = curation.paste(glyphs, CANVAS, np.zeros((4, 2), int))
  g = group.element(positions[:, 0], positions[:, 1])
  assert np.isin(np.asarray(g), elements).all()
  np.testing.assert_array_equal(np.asarray(group.act(g, at_origin)), canvases)
  # Moving a placed glyph from p to q inside the support: shift by compose(q, inverse(p)).
  q = elements[[0, 7, 40, -1]]
  moved = group.act(group.compose(q, group.inverse(g)), canvases)
  qy, qx = np.divmod(q, CANVAS[1])
  np.testing.assert_array_equal(np.asarray(moved),
                                curation.paste(glyphs, CANVAS, np.stack([qy, qx], 1)))


def test_rotate_curation_policies(digits):
  d = digits
  x, y = d.test_images, d.test_labels
  up_x, up_y, up_k = curation.rotate_curation(x, y, "upright", np.random.default_rng(0))
  keep = ~np.isin(y, (6, 9))
  np.testing.assert_array_equal(up_x, x[keep])
  np.testing.assert_array_equal(up_y, y[keep])
  assert not np.isin(up_y, (6, 9)).any() and (up_k == 0).all()
  rx, ry, k = curation.rotate_curation(x, y, "all90", np.random.default_rng(0))
  np.testing.assert_array_equal(ry, y[keep])                # original 10-class labels kept
  assert set(np.unique(k)) == {0, 1, 2, 3}
  rotations = groups.Rotations()
  np.testing.assert_array_equal(np.asarray(rotations.act(k, x[keep])), rx)
  _, all_y, _ = curation.rotate_curation(x, y, "all90", np.random.default_rng(0), exclude=())
  assert len(all_y) == len(y)


def test_curated_splits_in_and_out_of_support(digits):
  d = digits
  splits = curation.curated_splits(d.train_images, d.train_labels, d.test_images, d.test_labels,
                                   CANVAS, "bottom", np.random.default_rng(0))
  assert set(splits) == {"train", "test_in", "test_out"}
  assert (splits["train"]["positions"][:, 0] >= 12).all()
  assert (splits["test_in"]["positions"][:, 0] >= 12).all()
  assert (splits["test_out"]["positions"][:, 0] + 8 <= 12).all()
  np.testing.assert_array_equal(splits["test_out"]["labels"], d.test_labels)
  assert splits["train"]["images"].shape == (len(d.train_labels), 24, 24, 1)


@pytest.mark.parametrize("call, arg", [
    (lambda: curation.placement_positions("bottom", (6, 6), GLYPH), "canvas_hw"),
    (lambda: curation.placement_positions("bottom", (24, 0), GLYPH), "canvas_hw"),
    (lambda: curation.placement_positions("bottom", CANVAS, (8, -1)), "glyph_hw"),
    (lambda: curation.placement_positions("middle", CANVAS, GLYPH), "support"),
    (lambda: curation.placement_positions("bottom", (12, 12), GLYPH), "support"),
    (lambda: curation.placement_positions(((20, 30), (0, 5)), CANVAS, GLYPH), "support"),
    (lambda: curation.placement_positions(((0, 5), (3, 3)), CANVAS, GLYPH), "support"),
    (lambda: curation.placement_positions(((-1, 5), (0, 5)), CANVAS, GLYPH), "support"),
    (lambda: curation.placement_positions((1, 2, 3), CANVAS, GLYPH), "support"),
    (lambda: curation.place(_glyphs(2), (4, 4), "all", np.random.default_rng(0)), "canvas_hw"),
    (lambda: curation.place(_glyphs(2), CANVAS, "all", 0), "rng"),
    (lambda: curation.place(np.zeros((2, 8, 8)), CANVAS, "all", np.random.default_rng()),
     "images_NHWC"),
    (lambda: curation.rotate_curation(_glyphs(2), [0, 1], "tilted", np.random.default_rng()),
     "policy"),
    (lambda: curation.rotate_curation(_glyphs(2), [0, 1], "all90", np.random.default_rng(),
                                      exclude="six"), "exclude"),
    (lambda: curation.curated_splits(_glyphs(2), [0, 1], _glyphs(2), [0, 1], CANVAS, "all",
                                     np.random.default_rng()), "eval_support"),
])
def test_bad_input_names_the_argument(call, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    call()


def test_unknown_support_lists_allowed():
  with pytest.raises(ValueError, match="allowed: bottom, top, left, right, all"):
    curation.place(_glyphs(1), CANVAS, "centre", np.random.default_rng())
