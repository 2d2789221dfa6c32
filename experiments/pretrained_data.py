"""The pretrained study's labelled images: the lab's dashcam scenes (offline default) or a TFDS
dataset (image classification: the box is the whole image; detection: one example per box)."""
from __future__ import annotations

import dataclasses

import numpy as np

from experiments import config
from experiments.pretrained_config import DASHCAM, PretrainedConfig
from invariance import dashcam
from invariance.data import scenes
from invariance.data import sources

# The dashcam scenes' streams (seed 0): train and test draws never share a scene.
TRAIN_STREAM, TEST_STREAM = 20, 21


@dataclasses.dataclass(frozen=True, eq=False)
class Labelled:
  """Frames (N, S, S, 3; float in [0, 1] or uint8), the object's box in each (TFDS convention,
  fractions) and its label, for a train and a test split."""
  train_images: np.ndarray
  train_boxes: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_boxes: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  frame_size: int


def _scenes(cfg: PretrainedConfig, stream: int, n: int):
  """``n`` scenes, in equal shares (interleaved) of every lamp size: images, boxes, labels."""
  parts = []
  sizes = cfg.lamp_sizes
  for i, lamp in enumerate(sizes):
    count = len(range(i, n, len(sizes)))
    if count == 0:
      continue
    images, attrs, nuisance = scenes.make_scenes(count, dashcam.rng(0, stream, lamp), cfg.frame_size,
                                                 lamp)
    (y0, y1, x0, x1) = scenes.attribute_boxes(cfg.attribute, nuisance)[0].T / cfg.frame_size
    parts.append((images, np.stack([y0, x0, y1, x1], 1).astype(np.float32), attrs[cfg.attribute]))
  order = np.argsort(np.concatenate([np.arange(i, n, len(sizes)) for i in range(len(parts))]))
  return tuple(np.concatenate(p)[order] for p in zip(*parts))


def _whole_image(n: int) -> np.ndarray:
  return np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (n, 1))


def load(cfg: PretrainedConfig) -> Labelled:
  """The study's data; a dataset without the labels or boxes it needs stops with one line."""
  if cfg.dataset == DASHCAM:
    tr, te = _scenes(cfg, TRAIN_STREAM, cfg.num_train), _scenes(cfg, TEST_STREAM, cfg.num_test)
    names = scenes.ATTRIBUTES[cfg.attribute]
    return Labelled(*tr, *te, class_names=tuple(cfg.class_names or names),
                    frame_size=cfg.frame_size)
  try:
    if cfg.box_key:
      tr, te = (sources.load_boxes(cfg.dataset, split=split, data_dir=cfg.data_dir, limit=n,
                                   frame_size=cfg.frame_size, box_key=cfg.box_key,
                                   label_key=cfg.label_key)
                for split, n in ((cfg.train_split, cfg.num_train), (cfg.test_split, cfg.num_test)))
      parts = (tr.images, tr.boxes, tr.labels, te.images, te.boxes, te.labels)
      names, size = tr.class_names, cfg.frame_size
    else:
      data = sources.load_classification(
          cfg.dataset, data_dir=cfg.data_dir, train_split=cfg.train_split,
          test_split=cfg.test_split, limit=max(cfg.num_train, cfg.num_test),
          label_key=cfg.label_key)
      x_tr, x_te = data.train_images[:cfg.num_train], data.test_images[:cfg.num_test]
      if x_tr.shape[1] != x_tr.shape[2]:
        config.fail("dataset", cfg.dataset, f"has {x_tr.shape[1]}x{x_tr.shape[2]} images; allowed: "
                    "square images (or a detection dataset with --box_key)")
      if x_tr.shape[-1] == 1:
        x_tr, x_te = (np.repeat(x, 3, axis=-1) for x in (x_tr, x_te))
      parts = (x_tr, _whole_image(len(x_tr)), data.train_labels[:cfg.num_train],
               x_te, _whole_image(len(x_te)), data.test_labels[:cfg.num_test])
      label = sources.public_builder(cfg.dataset, cfg.data_dir).info.features[cfg.label_key]
      names = tuple(getattr(label, "names", None) or (str(i) for i in range(data.num_classes)))
      size = x_tr.shape[1]
  except (KeyError, TypeError) as e:
    config.fail("dataset", cfg.dataset, f"cannot be read as labelled images ({e}); allowed: an "
                "image classification dataset (--label_key) or detection dataset (--box_key)")
  if len(np.unique(parts[2])) < 2:
    config.fail("dataset", cfg.dataset, f"its first {len(parts[2])} training labels hold one "
                "class; allowed: a dataset (or --num_train) with at least two classes")
  if cfg.class_names and len(cfg.class_names) < int(max(parts[2].max(), parts[5].max())) + 1:
    config.fail("class_names", ",".join(cfg.class_names), "allowed: one name per label")
  return Labelled(*parts, class_names=tuple(cfg.class_names or names), frame_size=size)
