"""Views of an object at a context scale, greyscale, size strata, pasting (hand-worked cases)."""
import numpy as np
import pytest

from invariance.data import crops


def _checker(n=2, size=32):
  y, x = np.mgrid[:size, :size]
  img = np.stack([(y // 8 + x // 8) % 2] * 3, -1).astype(np.float32)
  return np.repeat(img[None], n, 0)


def _bilinear(image, y0, x0, side, out):
  """The oracle: scipy's bilinear interpolation at the output pixels' centres, edges repeated."""
  from scipy import ndimage
  centres = y0 + (np.arange(out) + 0.5) * side / out - 0.5
  yy, xx = np.meshgrid(centres, centres - y0 + x0, indexing="ij")
  return np.stack([ndimage.map_coordinates(image[..., c], [yy, xx], order=1, mode="nearest")
                   for c in range(image.shape[-1])], -1)


def test_whole_frame_view_is_a_resize_and_a_tight_crop_is_the_box():
  images = _checker()
  boxes = np.array([[0.25, 0.25, 0.5, 0.5], [0.0, 0.5, 0.25, 0.75]], np.float32)
  frame, centres = crops.view(images, boxes, crops.FULL_FRAME, 32)
  np.testing.assert_allclose(frame, images, atol=1e-6)          # same size: unchanged
  np.testing.assert_allclose(centres, [[0.375, 0.375], [0.125, 0.625]])
  tight, centres = crops.view(images, boxes, 1.0, 16)
  np.testing.assert_allclose(centres, 0.5)
  np.testing.assert_allclose(tight[0], _bilinear(images[0], 8, 8, 8, 16), atol=1e-5)
  context, _ = crops.view(images, boxes, 2.0, 32)               # a 16-pixel window around the box
  np.testing.assert_allclose(context[0], _bilinear(images[0], 4, 4, 16, 32), atol=1e-5)
  u8, _ = crops.view((images * 255).astype(np.uint8), boxes, 1.0, 16)
  np.testing.assert_allclose(u8, tight, atol=1e-5)


def test_windows_and_bad_boxes():
  boxes = np.array([[0.1, 0.2, 0.3, 0.3]], np.float32)          # 0.2 high, 0.1 wide
  np.testing.assert_allclose(crops.crop_windows(boxes, 3.0), [[-0.1, -0.05, 0.6, 0.6]], atol=1e-6)
  with pytest.raises(ValueError, match="context=0.5"):
    crops.crop_windows(boxes, 0.5)
  with pytest.raises(ValueError, match="ymax > ymin"):
    crops.check_boxes([[0.5, 0.1, 0.2, 0.3]], 1)
  with pytest.raises(ValueError, match=r"allowed: \(2, 4\)"):
    crops.check_boxes(boxes, 2)


def test_greyscale_keeps_luminance_and_drops_colour():
  red, green = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
  grey = crops.greyscale(np.stack([red, green])[:, None, None, :])
  np.testing.assert_allclose(grey[:, 0, 0], [[0.299] * 3, [0.587] * 3], atol=1e-6)


def test_areas_and_strata():
  boxes = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.1, 0.1], [0, 0, 1, 1]])
  np.testing.assert_allclose(crops.box_area(boxes), [0.25, 0.01, 1.0])
  np.testing.assert_array_equal(crops.size_strata([0.01, 0.25, 1.0], [0.1, 0.5]), [0, 1, 2])
  np.testing.assert_allclose(crops.strata_edges([1, 1, 3, 3], 3), [2.0])   # two sizes: one edge
  np.testing.assert_allclose(crops.strata_edges(np.arange(9.0), 3), [8 / 3, 16 / 3])


def test_paste_and_grid_positions():
  obj = np.ones((1, 2, 2, 3), np.float32)
  canvas = crops.paste(obj, 6, (1, 3), background=0.0)
  assert canvas.shape == (1, 6, 6, 3) and canvas.sum() == 12 and canvas[0, 1, 3, 0] == 1
  assert crops.paste(obj, 6, (1, 3))[0, 0, 0, 0] == 0.5
  assert crops.grid_positions(6, 2, 3) == [(y, x) for y in (0, 2, 4) for x in (0, 2, 4)]
  assert crops.grid_positions(6, 2, 1) == [(2, 2)]
  with pytest.raises(ValueError, match="must lie inside"):
    crops.paste(obj, 6, (5, 0))
