"""Every study's data comes from a TFDS dataset read with ``tfds.data_source`` (array_record).

One loader per concept:

* ``load_classification(name, ...)`` - labelled images as ``ImageData`` (NHWC float32 in [0, 1],
  int32 labels). ``"digits"`` (the offline default) is scikit-learn's bundled 8x8 digits, built on
  first use into ``data_dir`` as the TFDS dataset ``sklearn_digits`` and split (stratified) by
  seed; any other name is a TFDS image-classification dataset, ``NAME[/CONFIG][:VERSION]`` (mnist,
  fashion_mnist, kmnist, emnist/balanced, cifar10, svhn_cropped, ...), read from ``data_dir`` with
  its own train / test splits. ``as_objects`` then sets the objects' size and channels.
* ``load_scenes`` / ``load_scene_pairs`` - the procedural dashcam scenes (``scenes``), built on
  first use as the TFDS dataset ``dashcam_scenes`` whose config is the generator's parameters.

``data_dir=None`` is TFDS's default directory (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
Nothing is downloaded: a public dataset that is not prepared in ``data_dir`` raises a one-line
``FileNotFoundError`` that names it, the directory and how to prepare it, before anything is
written. tensorflow_datasets is imported inside the functions (the bench and the GPU image have
none), and through it ``tfds_builders``; under ``tfds.testing.mock_data`` public names read mock
records (the not-prepared check runs only when reading fails).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
from typing import Callable, Optional, Sequence, Union

import numpy as np

DIGITS = "digits"
EXAMPLES = ("digits", "mnist", "fashion_mnist", "kmnist", "emnist/balanced", "cifar10",
            "svhn_cropped")
# Classes that some 90-degree rotation turns into another class (excluded by the rotation study).
ROTATION_AMBIGUOUS = {"digits": (6, 9), "mnist": (6, 9), "emnist/digits": (6, 9),
                      "emnist/mnist": (6, 9)}
LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R BT.601, as PIL's "L"


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
  """A train/test pair of labelled image arrays (NHWC float32 in [0, 1], int32 labels)."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  name: str = ""
  rotation_ambiguous: tuple[int, ...] = ()   # labels to drop for the rotation study

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def _check_int(arg: str, value, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{arg}={value!r} is invalid; allowed: an int >= {low}")
  return int(value)


def _where(data_dir) -> str:
  if data_dir is not None:
    return os.fspath(data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return os.fspath(tfds.core.constants.DATA_DIR)


# -- classification -------------------------------------------------------------------------------
def load_classification(name: str = DIGITS, *, data_dir=None, seed: int = 0,
                        test_fraction: float = 0.25, train_split: str = "train",
                        test_split: str = "test", limit: Optional[int] = None,
                        image_key: str = "image", label_key: str = "label") -> ImageData:
  """A labelled image dataset by name (see module docstring), as NHWC float32 in [0, 1].

  ``seed`` and ``test_fraction`` set the digits' stratified split (identical to splitting
  sklearn's arrays with ``train_test_split(..., random_state=seed, stratify=labels)``); other
  datasets keep their ``train_split`` / ``test_split``. ``limit`` keeps the first ``limit``
  records of each split (quick runs, tests). Images of 2 dims get C = 1; uint8 is divided by 255.
  """
  seed = _check_int("seed", seed, 0)
  if limit is not None:
    limit = _check_int("limit", limit, 1)
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"name={name!r} is invalid; allowed: {DIGITS!r} or a TFDS image "
                     f"classification dataset NAME[/CONFIG][:VERSION], e.g. "
                     f"{', '.join(EXAMPLES[1:])}")
  if name == DIGITS:
    return _load_digits(seed, test_fraction, data_dir, limit)
  for arg, value in (("train_split", train_split), ("test_split", test_split),
                     ("image_key", image_key), ("label_key", label_key)):
    if not isinstance(value, str) or not value:
      raise ValueError(f"{arg}={value!r} is invalid; allowed: a non-empty string")
  builder = public_builder(name, data_dir)
  features = builder.info.features
  for arg, key in (("image_key", image_key), ("label_key", label_key)):
    if key not in features:
      raise ValueError(f"{arg}={key!r} is not a feature of {name!r}; allowed: "
                       f"{', '.join(sorted(features))}")
  splits = {}
  for split in (train_split, test_split):
    records = _read_split(builder, name, split, data_dir, limit, (image_key, label_key))
    splits[split] = (to_unit_float(records[image_key], image_key),
                     records[label_key].astype(np.int32))
  (x_tr, y_tr), (x_te, y_te) = splits[train_split], splits[test_split]
  num_classes = getattr(features[label_key], "num_classes", None)
  num_classes = int(num_classes or max(y_tr.max(), y_te.max()) + 1)
  return ImageData(x_tr, y_tr, x_te, y_te, num_classes=num_classes, name=name,
                   rotation_ambiguous=ROTATION_AMBIGUOUS.get(name.split(":")[0], ()))


def _load_digits(seed: int, test_fraction, data_dir, limit) -> ImageData:
  if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (float, int))
      or not 0.0 < test_fraction < 1.0):
    raise ValueError(f"test_fraction={test_fraction!r} is invalid; allowed: a float in (0, 1)")
  from sklearn import model_selection  # pylint: disable=import-outside-toplevel
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel

  records = tfds_builders.read(tfds_builders.prepare(
      tfds_builders.builder(tfds_builders.SklearnDigits.name, data_dir)))
  images_NHWC, labels = records["image"], records["label"].astype(np.int32)
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
      images_NHWC, labels, test_size=test_fraction, random_state=seed, stratify=labels)
  if limit is not None:
    x_tr, y_tr, x_te, y_te = x_tr[:limit], y_tr[:limit], x_te[:limit], y_te[:limit]
  return ImageData(x_tr, y_tr, x_te, y_te, num_classes=10, name=DIGITS,
                   rotation_ambiguous=ROTATION_AMBIGUOUS[DIGITS])


def not_prepared_error(name: str, data_dir) -> FileNotFoundError:
  """The one-line error for a public dataset that is neither in ``data_dir`` nor downloadable."""
  where = _where(data_dir)
  return FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared in data_dir={where!r} and cannot be downloaded "
      f"here; prepare it on a machine with internet with `tfds build {name} "
      f"--data_dir={where} --file_format=array_record` (or copy a prepared "
      f"{name.split('/')[0].split(':')[0]}/ directory into {where})")


def public_builder(name: str, data_dir, flag: str = "name", allowed: str = ""):
  """The TFDS builder of ``name``; a dataset whose builder code needs TensorFlow (e.g.
  ``coco_captions``) is opened from its prepared files instead. Errors name ``flag`` and say what is
  ``allowed``."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  allowed = allowed or (f"{DIGITS!r} or a TFDS image classification dataset, e.g. "
                        f"{', '.join(EXAMPLES[1:])}")
  try:     # a builder whose code needs TensorFlow prints a banner to stdout: kept out of results
    with tfds_builders.quiet(), contextlib.redirect_stdout(io.StringIO()):
      return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"{flag}={name!r} is not a TFDS dataset (neither registered nor prepared in "
                     f"data_dir={_where(data_dir)!r}); allowed: {allowed}") from None
  except ModuleNotFoundError:        # the builder's code needs TensorFlow: read the prepared files
    pass
  except ValueError as e:  # e.g. an unknown config or version; TFDS's message spans many lines
    raise ValueError(f"{flag}={name!r} cannot be opened: {str(e).splitlines()[0]}") from None
  try:
    with tfds_builders.quiet():
      return tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise not_prepared_error(name, data_dir) from None


def sequence_item(feature):
  """The feature of one item of a ``tfds.features.Sequence`` (any other feature unchanged): the
  ``step`` of ``feature_path`` through a features dict."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return feature.feature if isinstance(feature, tfds.features.Sequence) else feature


def feature_path(tree, key: str, step: Callable, on_missing: Callable[[str, str, list], Exception]):
  """``tree[...]`` along a '/'-separated ``key`` of a record or a features dict (a part may itself
  hold a '/', e.g. ``image/id``); ``step(node)`` steps into a sequence; ``on_missing(key, missing
  part, keys there)`` is the error when a part is not found."""
  parts, node = key.split("/"), tree
  while parts:
    node = step(node)
    keys = list(node.keys()) if hasattr(node, "keys") else []
    for n in range(len(parts), 0, -1):
      if "/".join(parts[:n]) in keys:
        node, parts = node["/".join(parts[:n])], parts[n:]
        break
    else:
      raise on_missing(key, "/".join(parts), sorted(keys))
  return node


def _read_split(builder, name: str, split: str, data_dir, limit, keys) -> dict[str, np.ndarray]:
  """The records of one split (first ``limit``), only ``keys``, stacked into arrays."""
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  records = _read_records(builder, name, split, data_dir, limit)
  return tfds_builders.stack([{k: r[k] for k in keys} for r in records])


def _read_records(builder, name: str, split: str, data_dir, limit) -> list[dict]:
  """The first ``limit`` decoded records of one split, read with random access."""
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  try:
    source = builder.as_data_source(split)
  except Exception as e:  # pylint: disable=broad-except  (diagnosed below, one line each)
    if not tfds_builders.is_prepared(builder):
      raise not_prepared_error(name, data_dir) from None
    if split not in builder.info.splits:
      raise ValueError(f"split={split!r} is not a split of {name!r}; allowed: "
                       f"{', '.join(sorted(builder.info.splits))}") from None
    fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
    raise ValueError(f"TFDS dataset {name!r} in data_dir={_where(data_dir)!r} ({fmt}) cannot be "
                     f"read with random access: {str(e).splitlines()[0]}; rebuild it with `tfds "
                     f"build {name} --file_format=array_record`") from None
  n = len(source) if limit is None else min(limit, len(source))
  try:
    return list(source.__getitems__(range(n)))
  except TypeError:  # tfds.testing.mock_data (4.9.10) leaves __getitems__ unbound: one by one
    return [source[i] for i in range(n)]


# -- detection datasets: one example per labelled box ---------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class BoxData:
  """One example per labelled box: its frame (uint8, resized to a square), the box as
  ``(ymin, xmin, ymax, xmax)`` fractions of the frame, and the box's label."""

  images: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]


def load_boxes(name: str, *, split: str, data_dir=None, limit: Optional[int] = None,
               frame_size: int = 384, image_key: str = "image", box_key: str = "objects/bbox",
               label_key: str = "objects/label") -> BoxData:
  """Every labelled box of a TFDS detection dataset's ``split`` (up to ``limit`` boxes) as an
  example. Frames are resized to ``frame_size`` squares (aspect ratio not kept; boxes are
  fractions, so they stay exact)."""
  import jax  # pylint: disable=import-outside-toplevel
  frame_size = _check_int("frame_size", frame_size, 8)
  builder = public_builder(name, data_dir, "dataset", "a TFDS detection dataset, e.g. voc/2007")
  features = builder.info.features
  step = sequence_item
  def missing(arg):
    return lambda key, part, keys: ValueError(
        f"{arg}={key!r} is not a feature of {name!r} (no {part!r} among: {', '.join(keys)}); "
        "allowed: a '/'-separated path into its features")

  for arg, key in (("image_key", image_key), ("box_key", box_key), ("label_key", label_key)):
    feature_path(features, key, step, missing(arg))
  names = getattr(step(feature_path(features, label_key, step, missing("label_key"))), "names", None)
  _nested = lambda record, key: feature_path(record, key, lambda x: x, missing("key"))  # noqa: E731
  images, boxes, labels = [], [], []
  for record in _read_records(builder, name, split, data_dir, None):
    rec_boxes = np.asarray(_nested(record, box_key), np.float32).reshape(-1, 4)
    rec_labels = np.asarray(_nested(record, label_key)).reshape(-1)
    if len(rec_boxes) == 0:
      continue
    frame = to_unit_float(np.asarray(_nested(record, image_key))[None], image_key)[0]
    frame = np.asarray(jax.image.resize(frame, (frame_size, frame_size, frame.shape[-1]), "linear"))
    frame = np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)
    if frame.shape[-1] == 1:
      frame = np.repeat(frame, 3, axis=-1)
    for box, label in zip(rec_boxes, rec_labels):
      box = np.clip(box, 0.0, 1.0)
      if box[2] <= box[0] or box[3] <= box[1]:
        continue                                   # an empty box has nothing to crop
      images.append(frame)
      boxes.append(box)
      labels.append(int(label))
    if limit is not None and len(labels) >= limit:
      break
  if not labels:
    raise ValueError(f"split={split!r} of {name!r} has no labelled boxes under {box_key!r}")
  n = len(labels) if limit is None else min(limit, len(labels))
  num = int(max(labels)) + 1
  class_names = tuple(names) if names else tuple(str(i) for i in range(num))
  return BoxData(np.stack(images[:n]), np.stack(boxes[:n]), np.asarray(labels[:n], np.int32),
                 class_names)


def to_unit_float(images, key: str = "image") -> np.ndarray:
  """NHWC float32 in [0, 1] from uint8 (divided by 255), bool or float images; adds C=1 to NHW."""
  images = np.asarray(images)
  if images.dtype == object:
    raise ValueError(f"feature {key!r} has images of different sizes; allowed: fixed-size images")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"feature {key!r} has shape {images.shape}; allowed: N x H x W (x C) images")
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if images.dtype == bool or np.issubdtype(images.dtype, np.floating):
    return images.astype(np.float32)
  raise ValueError(f"feature {key!r} has dtype {images.dtype}; allowed: uint8, bool or float")


# -- objects: size and channels -------------------------------------------------------------------
def resize_objects(images_NHWC, object_size: int, channels: int) -> np.ndarray:
  """Images as ``object_size x object_size`` objects with ``channels`` (1 = grey, 3 = colour).

  Colour to grey is BT.601 luminance; grey to colour repeats the channel. Resizing is linear with
  antialiasing (an area-weighted average when shrinking), so values stay in [0, 1]; images
  already of that size and channel count come back unchanged (same values, float32).
  """
  images_NHWC = np.asarray(images_NHWC, np.float32)
  if images_NHWC.ndim != 4:
    raise ValueError(f"images_NHWC has shape {images_NHWC.shape}; allowed: 4 dims (N, H, W, C)")
  object_size = _check_int("object_size", object_size, 1)
  if channels not in (1, 3) or isinstance(channels, bool):
    raise ValueError(f"channels={channels!r} is invalid; allowed: 1 (grey) or 3 (colour)")
  c = images_NHWC.shape[-1]
  if c not in (1, 3):
    raise ValueError(f"images have {c} channels; allowed: 1 (grey) or 3 (colour) input images")
  if c == 3 and channels == 1:
    images_NHWC = (images_NHWC @ LUMINANCE)[..., None]
  if images_NHWC.shape[1:3] != (object_size, object_size):
    images_NHWC = _resize(images_NHWC, object_size)
  if images_NHWC.shape[-1] == 1 and channels == 3:
    images_NHWC = np.repeat(images_NHWC, 3, axis=-1)
  return np.ascontiguousarray(images_NHWC, np.float32)


@functools.lru_cache(maxsize=None)
def _resizer(size: int):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.jit(lambda x: jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear",
                                            antialias=True))


def _resize(images_NHWC: np.ndarray, size: int, chunk: int = 8192) -> np.ndarray:
  n, _, _, c = images_NHWC.shape
  out = [np.asarray(_resizer(size)(images_NHWC[i:i + chunk])) for i in range(0, n, chunk)]
  return np.clip(np.concatenate(out) if out else np.zeros((0, size, size, c)), 0.0, 1.0)


def as_objects(data: ImageData, object_size: int, channels: int) -> ImageData:
  """``data`` with both splits through ``resize_objects`` (labels, classes and name kept)."""
  return dataclasses.replace(
      data, train_images=resize_objects(data.train_images, object_size, channels),
      test_images=resize_objects(data.test_images, object_size, channels))


# -- dashcam scenes -------------------------------------------------------------------------------
def load_scenes(num_scenes: int, seed: Union[int, Sequence[int]], *, size: int = 32,
                data_dir=None, lamp_size: int = 2) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """``num_scenes`` dashcam scenes: (images (N, size, size, 3) float32, attrs int32 (N,) each).

  Exactly ``scenes.make_scenes(num_scenes, np.random.default_rng(seed), size, lamp_size)[:2]``,
  read from the ``dashcam_scenes`` TFDS dataset of that config (built into ``data_dir`` on first
  use).
  ``seed`` may be a sequence of ints, e.g. ``(seed, stream)``.
  """
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  config = tfds_builders.ScenesConfig(num_scenes, seed, size, lamp_size=lamp_size)
  records = _read_local_scenes(config, data_dir)
  return records.pop("image"), {k: v.astype(np.int32) for k, v in records.items()}


def load_scene_pairs(num_pairs: int, attribute: str, seed: Union[int, Sequence[int]], *,
                     size: int = 32, data_dir=None, lamp_size: int = 2
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray],
                                dict[str, np.ndarray]]:
  """Scene pairs that differ in ``attribute`` only: (images_a, images_b, attrs_a, attrs_b).

  Exactly ``scenes.scene_pairs(num_pairs, attribute, np.random.default_rng(seed), size)[:4]``,
  read from the ``dashcam_scenes`` TFDS dataset of that config (built on first use).
  """
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  config = tfds_builders.ScenesConfig(num_pairs, seed, size, attribute=attribute,
                                      lamp_size=lamp_size)
  records = _read_local_scenes(config, data_dir)
  a, b = records.pop("image_a"), records.pop("image_b")
  other = records.pop(f"{attribute}_b").astype(np.int32)
  attrs_a = {k: v.astype(np.int32) for k, v in records.items()}
  return a, b, attrs_a, {**attrs_a, attribute: other}


def _read_local_scenes(config, data_dir) -> dict[str, np.ndarray]:
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  builder = tfds_builders.builder(tfds_builders.DashcamScenes.name, data_dir, config)
  return tfds_builders.read(tfds_builders.prepare(builder))
