"""Views of a labelled object for probing a pretrained tower: crops around a box at a stated context
scale, the whole frame, greyscale, and object-size strata.

Boxes are TFDS's convention: ``(ymin, xmin, ymax, xmax)`` as fractions of the image's height and
width. ``context`` is the side of the square crop in units of the box's longer side, centred on the
box (1 = tight, 3 = the box with context around it); ``context = 0`` is the whole frame. Every
view is resampled to ``size x size`` (bilinear, antialiased, one jitted call for the batch); parts
of a crop beyond the frame take the nearest edge's weight, so no black border is invented.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from invariance.data import sources

FULL_FRAME = 0.0


def check_boxes(boxes_N4, n: int) -> np.ndarray:
  boxes = np.asarray(boxes_N4, np.float32)
  if boxes.shape != (n, 4):
    raise ValueError(f"boxes have shape {boxes.shape}; allowed: ({n}, 4) as (ymin, xmin, ymax, xmax)")
  if not (np.all(boxes >= 0) and np.all(boxes <= 1) and np.all(boxes[:, 2] > boxes[:, 0])
          and np.all(boxes[:, 3] > boxes[:, 1])):
    raise ValueError("boxes must be (ymin, xmin, ymax, xmax) fractions in [0, 1] with ymax > ymin "
                     "and xmax > xmin")
  return boxes


def crop_windows(boxes_N4: np.ndarray, context: float) -> np.ndarray:
  """The square windows ``(y0, x0, side_y, side_x)`` (fractions) a view of ``context`` takes."""
  if context < 0:
    raise ValueError(f"context={context}: allowed 0 (whole frame) or a scale >= 1 of the box")
  n = len(boxes_N4)
  if context == FULL_FRAME:
    return np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (n, 1))
  if context < 1:
    raise ValueError(f"context={context}: allowed 0 (whole frame) or a scale >= 1 of the box")
  cy = (boxes_N4[:, 0] + boxes_N4[:, 2]) / 2
  cx = (boxes_N4[:, 1] + boxes_N4[:, 3]) / 2
  side = context * np.maximum(boxes_N4[:, 2] - boxes_N4[:, 0], boxes_N4[:, 3] - boxes_N4[:, 1])
  return np.stack([cy - side / 2, cx - side / 2, side, side], 1).astype(np.float32)


@functools.partial(jax.jit, static_argnames="size")
def _resample(images_NHWC, windows_N4, size: int):
  h, w = images_NHWC.shape[1:3]

  def one(image, window):
    y0, x0, sy, sx = window[0] * h, window[1] * w, window[2] * h, window[3] * w
    scale = jnp.stack([size / sy, size / sx])
    translation = -jnp.stack([y0, x0]) * scale
    return jax.image.scale_and_translate(image, (size, size, image.shape[-1]), (0, 1), scale,
                                         translation, "linear", antialias=True)

  return jax.vmap(one)(images_NHWC, windows_N4)


def view(images_NHWC, boxes_N4, context: float, size: int, grey: bool = False, batch: int = 64):
  """``(views (N, size, size, 3), object centres (N, 2) as fractions of the view)`` of images in
  [0, 1] (float) or uint8."""
  boxes = check_boxes(boxes_N4, len(images_NHWC))
  windows = crop_windows(boxes, context)
  out = np.concatenate([
      np.asarray(_resample(jnp.asarray(sources.to_unit_float(images_NHWC[i:i + batch])),
                           jnp.asarray(windows[i:i + batch]), size))
      for i in range(0, len(images_NHWC), batch)])
  if grey:
    out = greyscale(out)
  centres = np.stack([((boxes[:, 0] + boxes[:, 2]) / 2 - windows[:, 0]) / windows[:, 2],
                      ((boxes[:, 1] + boxes[:, 3]) / 2 - windows[:, 1]) / windows[:, 3]], 1)
  return np.clip(out, 0.0, 1.0), np.clip(centres, 0.0, 1.0 - 1e-6).astype(np.float32)


def greyscale(images_NHWC) -> np.ndarray:
  """Luminance (ITU-R BT.601) in all three channels: which lamp is lit survives, its colour not."""
  lum = np.asarray(images_NHWC, np.float32) @ sources.LUMINANCE
  return np.repeat(lum[..., None], 3, axis=-1)


def box_area(boxes_N4) -> np.ndarray:
  """Each box's area as a fraction of its image."""
  boxes = np.asarray(boxes_N4, np.float64)
  return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def strata_edges(areas_N, strata: int) -> np.ndarray:
  """Edges splitting ``areas_N`` into ``strata`` groups at its quantiles; when the areas take no
  more distinct values than that (e.g. a few object sizes), one stratum per value."""
  values = np.unique(np.asarray(areas_N, np.float64))
  if len(values) <= strata:
    return (values[1:] + values[:-1]) / 2
  return np.quantile(areas_N, np.linspace(0, 1, strata + 1)[1:-1])


def size_strata(areas_N, edges) -> np.ndarray:
  """Stratum index of each area: 0 below ``edges[0]``, ..., ``len(edges)`` at or above the last."""
  return np.searchsorted(np.asarray(edges, np.float64), np.asarray(areas_N), side="right")


def paste(objects_NHWC, size: int, position, background: float = 0.5) -> np.ndarray:
  """Each object pasted with its top-left corner at ``position = (y, x)`` on a ``size x size``
  canvas of grey ``background``."""
  objects = np.asarray(objects_NHWC, np.float32)
  n, h, w, c = objects.shape
  y, x = position
  if not (0 <= y <= size - h and 0 <= x <= size - w):
    raise ValueError(f"position {position}: an object of {h}x{w} must lie inside {size}x{size}")
  canvas = np.full((n, size, size, c), background, np.float32)
  canvas[:, y:y + h, x:x + w] = objects
  return canvas


def grid_positions(size: int, object_side: int, grid: int) -> list[tuple[int, int]]:
  """``grid x grid`` evenly spaced top-left corners that keep an object inside the canvas."""
  steps = np.linspace(0, size - object_side, grid).round().astype(int) if grid > 1 else np.array(
      [(size - object_side) // 2])
  return [(int(y), int(x)) for y in steps for x in steps]
