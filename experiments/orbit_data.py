"""The orbit study's data for one data seed: curated training digits, a validation split of
held-out *training* digits in the support (never test digits), in- and out-of-support test sets,
test positions (for the audit's inside/outside split) and the placement grid (for the maps).

Translations: glyphs placed in ``support`` of a square canvas; test out of support = placed in the
complement half. Rotations: trained upright; the rotated test set rotates each digit by k x 90
degrees with k in {1, 2, 3} (never the identity); 6 and 9 excluded.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from experiments import config
from experiments.orbit_config import OrbitConfig
from invariance import groups as groups_lib
from invariance.data import curation
from invariance.data import sources


@dataclasses.dataclass(frozen=True)
class Data:
  group: groups_lib.Group
  train: dict               # images, labels, elements (translation element of each placement)
  val: dict                 # images, labels: held-out training digits, in the support
  test_in: dict             # images, labels (+ positions for translations)
  test_out: dict
  support: np.ndarray       # group elements of the training support
  glyphs: Optional[dict] = None   # test glyphs (images, labels) for the placement maps
  grid: Optional[np.ndarray] = None   # (P, 2) every non-wrapping top-left position
  support_positions: Optional[np.ndarray] = None   # (S, 2) top-left positions of the support
  num_classes: int = 10


def _split_off(images, labels, fraction: float, rng: np.random.Generator):
  """(kept images, labels), (held-out images, labels): a random ``fraction`` held out."""
  order = rng.permutation(len(labels))
  n_out = max(1, int(round(fraction * len(labels))))
  out, keep = order[:n_out], order[n_out:]
  return (images[keep], labels[keep]), (images[out], labels[out])


def load(cfg: OrbitConfig, seed: int) -> Data:
  """The data of the run with ``seed`` (``--data_seed`` fixes one split for every seed); a
  missing or unreadable dataset is a one-line error naming ``--dataset``."""
  data_seed = seed if cfg.data_seed < 0 else cfg.data_seed
  try:
    loaded = sources.load_classification(cfg.dataset, data_dir=cfg.data_dir, seed=data_seed)
  except (ValueError, FileNotFoundError) as e:
    config.fail("dataset", cfg.dataset, str(e))
  return make(sources.as_objects(loaded, cfg.object_size, cfg.channels), group=cfg.group,
              canvas=cfg.canvas, support=cfg.support,
              placements_per_image=cfg.placements_per_image, val_fraction=cfg.val_fraction,
              map_examples=cfg.map_examples, data_seed=data_seed)


def make(source: sources.ImageData, *, group: str, canvas: int, support: str,
         placements_per_image: int, val_fraction: float, map_examples: int,
         data_seed: int) -> Data:
  rng = np.random.default_rng(data_seed)
  (train_x, train_y), (val_x, val_y) = _split_off(source.train_images, source.train_labels,
                                                  val_fraction, rng)
  if group == "rotations":
    upright = lambda x, y: dict(zip(("images", "labels"), curation.rotate_curation(
        x, y, "upright", rng, exclude=source.rotation_ambiguous)[:2]))
    test_in = upright(source.test_images, source.test_labels)
    k = rng.integers(1, 4, size=len(test_in["labels"]))            # never the identity
    rotated = np.stack([np.rot90(x, int(kk), axes=(0, 1)) for x, kk in zip(test_in["images"], k)])
    train = upright(train_x, train_y)
    train["elements"] = np.zeros(len(train["labels"]), np.int32)
    return Data(groups_lib.Rotations(), train, upright(val_x, val_y), test_in,
                {"images": rotated.astype(np.float32), "labels": test_in["labels"]},
                np.zeros(1, np.int32), num_classes=source.num_classes)
  canvas_hw, glyph_hw = (canvas, canvas), source.train_images.shape[1:3]
  reps = placements_per_image
  splits = curation.curated_splits(np.repeat(train_x, reps, 0), np.repeat(train_y, reps, 0),
                                   source.test_images, source.test_labels, canvas_hw, support, rng)
  pos = splits["train"]["positions"]
  train = dict(splits["train"], elements=(pos[:, 0] * canvas + pos[:, 1]).astype(np.int32))
  val_images, _ = curation.place(np.repeat(val_x, reps, 0), canvas_hw, support, rng)
  val_y = np.repeat(val_y, reps, 0)
  drop = lambda s, *keep: {k: s[k] for k in ("images", "labels", *keep)}
  return Data(groups_lib.Translations(canvas, canvas), train,
              {"images": val_images, "labels": np.asarray(val_y, np.int32)},
              drop(splits["test_in"], "positions"), drop(splits["test_out"]),
              curation.support_elements(support, canvas_hw, glyph_hw),
              glyphs={"images": source.test_images[:map_examples],
                      "labels": np.asarray(source.test_labels[:map_examples], np.int32)},
              grid=curation.placement_positions("all", canvas_hw, glyph_hw),
              support_positions=curation.placement_positions(support, canvas_hw, glyph_hw),
              num_classes=source.num_classes)


def inside_mask(data: Data, elements: np.ndarray, positions_N2: np.ndarray) -> np.ndarray:
  """(G, N): whether element g moves example n (at top-left ``positions_N2[n]``) to a position of
  the training support without wrapping around the canvas."""
  h, w = data.group.height, data.group.width
  dy, dx = np.asarray(elements) // w, np.asarray(elements) % w
  rows = positions_N2[None, :, 0] + dy[:, None]
  cols = positions_N2[None, :, 1] + dx[:, None]
  allowed = np.zeros((h, w), bool)
  allowed[data.support_positions[:, 0], data.support_positions[:, 1]] = True
  return (rows < h) & (cols < w) & allowed[rows % h, cols % w]
