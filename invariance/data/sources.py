"""Base image sources: sklearn's bundled 8x8 digits (offline default) and any TFDS image dataset.

Every source returns NHWC float32 images in [0, 1] and int32 labels as numpy arrays. TFDS is read
through ``tfds.data_source`` (array_record, random access, no TensorFlow) and imported lazily, so
nothing that only uses the digits needs tensorflow_datasets.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

SOURCES = ("digits", "tfds:<name>")
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
  """A train/test pair of labelled image arrays (NHWC float32 in [0, 1], int32 labels)."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  name: str = ""

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def _check_seed(seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed={seed!r} is invalid; allowed: an int >= 0")
  return int(seed)


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> ImageData:
  """sklearn's 1797 bundled 8x8 digits as (N, 8, 8, 1) in [0, 1]; stratified split fixed by seed."""
  seed = _check_seed(seed)
  if not isinstance(test_fraction, (float, int)) or not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction={test_fraction!r} is invalid; allowed: a float in (0, 1)")
  from sklearn import datasets, model_selection  # pylint: disable=import-outside-toplevel

  digits = datasets.load_digits()
  images_NHWC = (digits.images[..., None] / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
      images_NHWC, labels, test_size=test_fraction, random_state=seed, stratify=labels)
  return ImageData(x_tr, y_tr, x_te, y_te, num_classes=10, name="digits")


GENERATED = ("placed_digits", "dashcam_scenes")   # built offline by invariance.data.tfds_builders


def _tfds_not_prepared(name: str, data_dir) -> FileNotFoundError:
  where = str(data_dir if data_dir is not None else "~/tensorflow_datasets")
  base = name.split("/")[0]
  if base in GENERATED:
    how = (f"build it offline with invariance.data.tfds_builders.build({base!r}, data_dir, "
           f"config)")
  else:
    how = (f"on a machine with internet run `tfds build {base} --data_dir=DIR "
           f"--file_format=array_record`, then copy DIR here and pass it as data_dir")
  return FileNotFoundError(f"TFDS dataset {name!r} is not prepared in data_dir={where!r} and "
                           f"cannot be downloaded here; {how}")


def read_tfds(name: str, split: str = "train", data_dir=None,
              limit: Optional[int] = None) -> dict[str, np.ndarray]:
  """Every feature of a prepared TFDS split, stacked into numpy arrays (dict keyed by feature).

  ``name`` may carry a config (``"placed_digits/bottom_24"``). Raises FileNotFoundError (one line,
  with how to prepare it) when the dataset is not prepared; never downloads.
  """
  if not isinstance(name, str) or not name or name.startswith(TFDS_PREFIX):
    raise ValueError(f"name={name!r} is invalid; allowed: a TFDS dataset name such as 'mnist'")
  if not isinstance(split, str) or not split:
    raise ValueError(f"split={split!r} is invalid; allowed: a split name such as 'train'")
  if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                            or limit < 1):
    raise ValueError(f"limit={limit!r} is invalid; allowed: None or an int >= 1")
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  if name.split("/")[0] in GENERATED:  # register the project's builders
    from invariance.data import tfds_builders  # noqa: F401  pylint: disable=unused-import
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"name={name!r} is not a TFDS dataset (neither registered nor found in "
                     f"data_dir={data_dir!r}); allowed: a name from tfds.list_builders() or a "
                     f"dataset built into data_dir") from None
  except ValueError as e:  # e.g. an unknown config; TFDS's message spans many lines
    raise ValueError(f"name={name!r} cannot be opened: {str(e).splitlines()[0]}") from None
  if not builder.is_prepared():
    raise _tfds_not_prepared(name, data_dir)
  fmt = builder.info.file_format
  if fmt is None or fmt.value not in ("array_record", "parquet"):
    raise ValueError(f"TFDS dataset {name!r} in data_dir={data_dir!r} is stored as "
                     f"{getattr(fmt, 'value', fmt)}, which has no random access; rebuild it with "
                     f"`tfds build {name.split('/')[0]} --file_format=array_record`")
  if split not in builder.info.splits:
    raise ValueError(f"split={split!r} is not a split of {name!r}; allowed: "
                     f"{', '.join(sorted(builder.info.splits))}")
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  n = len(source) if limit is None else min(int(limit), len(source))
  records = source.__getitems__(range(n))
  return _stack(records)


def _stack(records) -> dict[str, np.ndarray]:
  out = {}
  for key in records[0]:
    values = [r[key] for r in records]
    try:
      out[key] = np.stack([np.asarray(v) for v in values])
    except ValueError:  # variable-size feature (e.g. images of different sizes)
      out[key] = np.asarray(values, dtype=object)
  return out


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


def load_tfds(name: str, split: str = "train", data_dir=None, limit: Optional[int] = None,
              image_key: str = "image", label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
  """(images NHWC float32 in [0, 1], labels int32) of one split of a prepared TFDS dataset."""
  features = read_tfds(name, split, data_dir, limit)
  for arg, key in (("image_key", image_key), ("label_key", label_key)):
    if key not in features:
      raise ValueError(f"{arg}={key!r} is not a feature of {name!r}; allowed: "
                       f"{', '.join(sorted(features))}")
  return to_unit_float(features[image_key], image_key), features[label_key].astype(np.int32)


def _num_classes(name: str, data_dir, label_key: str, fallback: int) -> int:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  feature = tfds.builder(name, data_dir=data_dir).info.features[label_key]
  return int(getattr(feature, "num_classes", None) or fallback)


def load_source(name: str = "digits", *, seed: int = 0, test_fraction: float = 0.25,
                data_dir=None, train_split: str = "train", test_split: str = "test",
                limit: Optional[int] = None) -> ImageData:
  """Dispatch: ``"digits"`` (offline default) or ``"tfds:<name>"`` (e.g. ``"tfds:mnist"``)."""
  if name == "digits":
    return load_digits(seed=seed, test_fraction=test_fraction)
  if isinstance(name, str) and name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX):
    tfds_name = name[len(TFDS_PREFIX):]
    x_tr, y_tr = load_tfds(tfds_name, train_split, data_dir, limit)
    x_te, y_te = load_tfds(tfds_name, test_split, data_dir, limit)
    num_classes = _num_classes(tfds_name, data_dir, "label", max(y_tr.max(), y_te.max()) + 1)
    return ImageData(x_tr, y_tr, x_te, y_te, num_classes=num_classes, name=name)
  raise ValueError(f"name={name!r} is an unknown source; allowed: {', '.join(SOURCES)}")
