"""Curation as a pipeline stage: where glyphs are placed, and how rotated, defines invariance.

Placement puts each glyph (h x w) on a larger canvas (H x W) at a top-left position (row, col) drawn
uniformly from a *support*: a name, or explicit half-open ranges of top-left positions. The glyph is
always fully on the canvas. Named supports (halves are ``H // 2`` rows / ``W // 2`` columns; on an
odd canvas the middle row / column belongs to neither half):

  * ``all``    - anywhere on the canvas,
  * ``top``  - glyph entirely in rows ``[0, H // 2)``,  ``bottom`` - in rows ``[H - H // 2, H)``,
  * ``left`` - glyph entirely in cols ``[0, W // 2)``,  ``right``  - in cols ``[W - W // 2, W)``.

The same support as ``Translations(H, W)`` elements (``support_elements``) lets augmentation stay
in the region the data covers: a glyph placed at p moves to q under ``compose(q, inverse(p))``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

SUPPORTS = ("bottom", "top", "left", "right", "all")
COMPLEMENT = {"bottom": "top", "top": "bottom", "left": "right", "right": "left"}
ROTATION_POLICIES = ("upright", "all90")

Ranges = tuple[tuple[int, int], tuple[int, int]]
Support = Union[str, Ranges]


def _check_hw(arg: str, hw) -> tuple[int, int]:
  try:
    h, w = (int(v) for v in hw)
    ok = all(float(v) == int(v) for v in hw)
  except (TypeError, ValueError):
    ok = False
  if not ok or h < 1 or w < 1:
    raise ValueError(f"{arg}={hw!r} is invalid; allowed: a pair of positive ints (height, width)")
  return h, w


def _check_rng(rng) -> np.random.Generator:
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng={rng!r} is invalid; allowed: a numpy Generator (np.random.default_rng)")
  return rng


def _named_ranges(support: str, canvas_hw, glyph_hw) -> Ranges:
  (H, W), (h, w) = canvas_hw, glyph_hw
  rows, cols = (0, H - h + 1), (0, W - w + 1)
  if support == "top":
    rows = (0, H // 2 - h + 1)
  elif support == "bottom":
    rows = (H - H // 2, H - h + 1)
  elif support == "left":
    cols = (0, W // 2 - w + 1)
  elif support == "right":
    cols = (W - W // 2, W - w + 1)
  return rows, cols


def _support_ranges(support, canvas_hw, glyph_hw) -> Ranges:
  """Validated half-open (rows, cols) ranges of top-left positions for a support."""
  (H, W), (h, w) = canvas_hw, glyph_hw
  if isinstance(support, str):
    if support not in SUPPORTS:
      raise ValueError(f"support={support!r} is unknown; allowed: {', '.join(SUPPORTS)} or "
                       f"ranges ((r0, r1), (c0, c1))")
    (r0, r1), (c0, c1) = _named_ranges(support, canvas_hw, glyph_hw)
    if r1 <= r0 or c1 <= c0:
      raise ValueError(f"support={support!r} is empty: a {h}x{w} glyph does not fit in the "
                       f"{support} half of a {H}x{W} canvas; allowed: a larger canvas_hw")
    return (r0, r1), (c0, c1)
  try:
    (r0, r1), (c0, c1) = ((int(a), int(b)) for a, b in support)
  except (TypeError, ValueError):
    raise ValueError(f"support={support!r} is invalid; allowed: {', '.join(SUPPORTS)} or "
                     f"ranges ((r0, r1), (c0, c1))") from None
  if not (0 <= r0 < r1 <= H - h + 1 and 0 <= c0 < c1 <= W - w + 1):
    raise ValueError(f"support={support!r} is empty or puts a {h}x{w} glyph off the {H}x{W} "
                     f"canvas; allowed: half-open top-left ranges with 0 <= r0 < r1 <= {H - h + 1} "
                     f"and 0 <= c0 < c1 <= {W - w + 1}")
  return (r0, r1), (c0, c1)


def _check_canvas(canvas_hw, glyph_hw) -> tuple[tuple[int, int], tuple[int, int]]:
  canvas_hw, glyph_hw = _check_hw("canvas_hw", canvas_hw), _check_hw("glyph_hw", glyph_hw)
  if canvas_hw[0] < glyph_hw[0] or canvas_hw[1] < glyph_hw[1]:
    raise ValueError(f"canvas_hw={canvas_hw!r} is smaller than the glyph {glyph_hw!r}; allowed: "
                     f"a canvas at least as large as the glyph in both dimensions")
  return canvas_hw, glyph_hw


def placement_positions(support: Support, canvas_hw, glyph_hw) -> np.ndarray:
  """Allowed top-left (row, col) positions, int32 (P, 2), row-major; glyphs stay on the canvas."""
  canvas_hw, glyph_hw = _check_canvas(canvas_hw, glyph_hw)
  (r0, r1), (c0, c1) = _support_ranges(support, canvas_hw, glyph_hw)
  rows, cols = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
  return np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.int32)


def support_elements(support: Support, canvas_hw, glyph_hw) -> np.ndarray:
  """The support as sorted ``Translations(H, W)`` element indices ``row * W + col`` (int32).

  Element ``row * W + col`` shifts a glyph drawn at the origin to top-left position (row, col).
  """
  positions_P2 = placement_positions(support, canvas_hw, glyph_hw)
  width = int(canvas_hw[1])
  return np.sort(positions_P2[:, 0] * width + positions_P2[:, 1]).astype(np.int32)


def _check_images(images_NHWC) -> np.ndarray:
  images_NHWC = np.asarray(images_NHWC)
  if images_NHWC.ndim != 4:
    raise ValueError(f"images_NHWC has shape {images_NHWC.shape}; allowed: 4 dims (N, H, W, C)")
  return images_NHWC


def place(images_NHWC, canvas_hw, support: Support, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
  """Paste each glyph on a zero canvas at a uniform position of the support.

  Returns (canvases (N, H, W, C) float32, positions (N, 2) int32 top-left (row, col)).
  """
  images_NHWC = _check_images(images_NHWC)
  positions_P2 = placement_positions(support, canvas_hw, images_NHWC.shape[1:3])
  rng = _check_rng(rng)
  n, h, w, c = images_NHWC.shape
  H, W = _check_hw("canvas_hw", canvas_hw)
  positions_N2 = positions_P2[rng.integers(0, len(positions_P2), size=n)]
  return paste(images_NHWC, (H, W), positions_N2), positions_N2


def paste(images_NHWC, canvas_hw, positions_N2) -> np.ndarray:
  """Paste glyph i at top-left ``positions_N2[i]`` of a zero canvas (vectorised, float32)."""
  images_NHWC = _check_images(images_NHWC)
  n, h, w, c = images_NHWC.shape
  H, W = _check_hw("canvas_hw", canvas_hw)
  positions_N2 = np.asarray(positions_N2, dtype=np.int64)
  if positions_N2.shape != (n, 2):
    raise ValueError(f"positions_N2 has shape {positions_N2.shape}; allowed: ({n}, 2)")
  if n and (positions_N2.min() < 0 or positions_N2[:, 0].max() > H - h
            or positions_N2[:, 1].max() > W - w):
    raise ValueError(f"positions_N2 put a {h}x{w} glyph off the {H}x{W} canvas; allowed: "
                     f"rows in [0, {H - h}], cols in [0, {W - w}]")
  canvases = np.zeros((n, H, W, c), np.float32)
  rows = positions_N2[:, 0, None, None] + np.arange(h)[None, :, None]   # (N, h, 1)
  cols = positions_N2[:, 1, None, None] + np.arange(w)[None, None, :]   # (N, 1, w)
  canvases[np.arange(n)[:, None, None], rows, cols] = images_NHWC
  return canvases


def rotate_curation(images_NHWC, labels, policy: str, rng: np.random.Generator,
                    exclude: Sequence[int] = (6, 9)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Rotation curation: ``upright`` keeps images, ``all90`` rotates each by a uniform k x 90 deg.

  Examples whose label is in ``exclude`` (rotation-ambiguous classes) are dropped under both
  policies; the remaining labels keep their original values (the 10-class label space is unchanged).
  Rotation is ``np.rot90(k, axes=(1, 2))``, i.e. element k of ``groups.Rotations``.
  Returns (images, labels, k int32 per kept example).
  """
  if policy not in ROTATION_POLICIES:
    raise ValueError(f"policy={policy!r} is unknown; allowed: {', '.join(ROTATION_POLICIES)}")
  images_NHWC = _check_images(images_NHWC)
  labels = np.asarray(labels)
  if labels.shape != images_NHWC.shape[:1]:
    raise ValueError(f"labels has shape {labels.shape}; allowed: ({images_NHWC.shape[0]},)")
  try:
    exclude = tuple(int(e) for e in exclude)
  except (TypeError, ValueError):
    raise ValueError(f"exclude={exclude!r} is invalid; allowed: a sequence of int labels") from None
  rng = _check_rng(rng)
  if policy == "all90" and images_NHWC.shape[1] != images_NHWC.shape[2]:
    raise ValueError(f"policy='all90' needs square images, got {images_NHWC.shape[1:3]}; "
                     f"allowed: policy='upright' for non-square images")
  keep = ~np.isin(labels, exclude)
  images_NHWC, labels = images_NHWC[keep], labels[keep].astype(np.int32)
  if policy == "upright":
    return images_NHWC.copy(), labels, np.zeros(len(labels), np.int32)
  k = rng.integers(0, 4, size=len(labels)).astype(np.int32)
  rotated = images_NHWC.copy()
  for r in range(1, 4):
    rotated[k == r] = np.rot90(images_NHWC[k == r], r, axes=(1, 2))
  return rotated, labels, k


def curated_splits(train_images_NHWC, train_labels, test_images_NHWC, test_labels,
                   canvas_hw, support: Support, rng: np.random.Generator,
                   eval_support: Optional[Support] = None) -> dict[str, dict[str, np.ndarray]]:
  """Train and test placed in ``support``, plus test placed in ``eval_support`` (out of support).

  ``eval_support`` defaults to the complement half (bottom <-> top, left <-> right); it must be
  given for ``all`` or explicit ranges. Returns ``{"train", "test_in", "test_out"}``, each a dict of
  ``images`` (N, H, W, C), ``labels`` (N,) and ``positions`` (N, 2), ready for ``pipeline``.
  """
  if eval_support is None:
    if not isinstance(support, str) or support not in COMPLEMENT:
      raise ValueError(f"eval_support=None needs a named half as support, got support="
                       f"{support!r}; allowed: support in {', '.join(COMPLEMENT)} or an explicit "
                       f"eval_support")
    eval_support = COMPLEMENT[support]
  glyph_hw = np.shape(train_images_NHWC)[1:3]
  placement_positions(support, canvas_hw, glyph_hw)        # validate both before any work
  placement_positions(eval_support, canvas_hw, glyph_hw)
  _check_rng(rng)
  splits = {}
  for split, images, labels, sup in (("train", train_images_NHWC, train_labels, support),
                                     ("test_in", test_images_NHWC, test_labels, support),
                                     ("test_out", test_images_NHWC, test_labels, eval_support)):
    canvases, positions = place(images, canvas_hw, sup, rng)
    splits[split] = {"images": canvases, "labels": np.asarray(labels, np.int32),
                     "positions": positions}
  return splits
