"""The offline default datasets as TFDS builders (array_record, no network, no TensorFlow).

* ``sklearn_digits`` - scikit-learn's bundled 1797 8x8 digits, in sklearn's order, one split
  ``train``. Features: ``image`` (8, 8, 1) float32 in [0, 1] (the 0..16 grey levels / 16), ``label``
  (ClassLabel, 10). ``sources.load_classification("digits", seed=...)`` splits it by seed.
* ``dashcam_scenes`` - the procedural scenes of ``invariance.data.scenes``; the generator's
  parameters are the builder config (``ScenesConfig``: scene count, image side, seed, and an
  attribute for counterfactual pairs), so a new scene count or seed is a new config, not new code.
  One split ``train``. Features: ``image`` (S, S, 3) float32 and the four attributes as
  ClassLabels; pairs (``attribute`` set) store ``image_a`` / ``image_b``, the attributes of scene a
  and ``<attribute>_b``.

Both are built on first use into ``data_dir`` (``prepare``; one log line, then reused) and read back
with ``builder.as_data_source`` or, by anyone, ``tfds.data_source(name/config, data_dir=...)``.
Records are written in generation order (shuffling disabled), images as raw float32 bytes: the round
trip is exact, and ``scenes.make_scenes`` with the same parameters gives the same arrays. A scenes
config name carries a fingerprint of ``scenes.py``, so editing the generator builds a new dataset
instead of silently reusing stale scenes. This module imports tensorflow_datasets at import time;
``invariance.data.sources`` imports it only when a dataset is read.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import logging as std_logging
import os
import time
from typing import Sequence, Union

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from invariance.data import scenes

FILE_FORMAT = "array_record"
SPLIT = "train"


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A generator builder that writes array_record in generation order and never downloads.

  Not registered with TFDS: read through an instance (``as_data_source``) or, once prepared,
  ``tfds.data_source(name, data_dir=...)``, which finds it on disk.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, file_format=FILE_FORMAT, **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  # TFDS's own code_path resolves packages through `importlib_resources`, an optional dependency
  # (etils[epath]) that is not installed here; the source file is all TFDS needs.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  # TFDS prints these two to stdout (where the studies print their results): log lines instead.
  def _log_download_bytes(self) -> None:
    self._build_start = time.perf_counter()
    logging.info("Building TFDS dataset %s into %s (first use; later runs reuse it)",
                 self.info.full_name, self.data_dir_root)

  def _log_download_done(self) -> None:
    logging.info("Built TFDS dataset %s in %.1f s: %s", self.info.full_name,
                 time.perf_counter() - getattr(self, "_build_start", time.perf_counter()),
                 self.data_dir)

  def _info_from(self, features: dict, description: str, supervised=None) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs would look for metadata files next to code.
    return tfds.core.DatasetInfo(builder=self, description=description,
                                 features=tfds.features.FeaturesDict(features),
                                 supervised_keys=supervised, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {SPLIT: self._generate_examples()}

  def _generate_examples(self):
    arrays = self.arrays()
    for i in range(len(next(iter(arrays.values())))):
      yield i, {k: v[i] for k, v in arrays.items()}

  def arrays(self) -> dict[str, np.ndarray]:
    """The whole split as arrays keyed by feature, exactly as written."""
    raise NotImplementedError


def _image(shape) -> tfds.features.Tensor:
  # Raw bytes: exact float32, written and read without a per-value float list.
  return tfds.features.Tensor(shape=shape, dtype=np.float32, encoding=tfds.features.Encoding.BYTES)


# -- sklearn digits -------------------------------------------------------------------------------
class SklearnDigits(ArrayRecordBuilder):
  """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), grey levels 0..16 scaled to
  [0, 1], in sklearn's order."""

  name = "sklearn_digits"

  def _info(self):
    return self._info_from({"image": _image((8, 8, 1)),
                            "label": tfds.features.ClassLabel(num_classes=10)},
                           type(self).__doc__, supervised=("image", "label"))

  def arrays(self):
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
    digits = datasets.load_digits()
    return {"image": (digits.images[..., None] / 16.0).astype(np.float32),
            "label": digits.target.astype(np.int64)}


# -- dashcam scenes -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def generator_fingerprint() -> str:
  """8 hex digits of the scene generator's source (``scenes.py``): part of every config name."""
  return hashlib.sha256(inspect.getsource(scenes).encode()).hexdigest()[:8]


@dataclasses.dataclass(frozen=True)
class ScenesConfig:
  """The scene generator's parameters: ``num_scenes`` scenes of ``size x size`` (lamps of
  ``lamp_size``) drawn from
  ``np.random.default_rng(list(seed))`` by ``scenes.make_scenes`` or, with ``attribute`` set, pairs
  that differ in that attribute only (``scenes.scene_pairs``)."""

  num_scenes: int
  seed: tuple[int, ...] = (0,)
  size: int = 32
  attribute: str = ""
  lamp_size: int = 2

  def __post_init__(self):
    seed = (self.seed,) if isinstance(self.seed, (int, np.integer)) else self.seed
    try:
      seed = tuple(seed)
      ok = len(seed) > 0 and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                 and s >= 0 for s in seed)
    except TypeError:
      ok = False
    if not ok:
      raise ValueError(f"seed={self.seed!r} is invalid; allowed: an int >= 0 or a non-empty "
                       f"sequence of them (numpy seed entropy)")
    object.__setattr__(self, "seed", tuple(int(s) for s in seed))
    n = self.num_scenes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f"num_scenes={n!r} is invalid; allowed: an int >= 1")
    scenes._check_size(self.size)  # pylint: disable=protected-access
    scenes._check_lamp(self.lamp_size)  # pylint: disable=protected-access
    if self.attribute and self.attribute not in scenes.ATTRIBUTES:
      raise ValueError(f"attribute={self.attribute!r} is unknown; allowed: '' (scenes) or one of "
                       f"{', '.join(scenes.ATTRIBUTES)} (pairs)")

  @property
  def name(self) -> str:
    """The TFDS config name, e.g. ``n20000_s32_seed0-0_g1a2b3c4d`` (``pairs_light_...``)."""
    kind = f"pairs_{self.attribute}_" if self.attribute else ""
    seed = "-".join(map(str, self.seed))
    lamp = f"_l{self.lamp_size}" if self.lamp_size != 2 else ""
    return f"{kind}n{self.num_scenes}_s{self.size}{lamp}_seed{seed}_g{generator_fingerprint()}"

  def generate(self) -> dict[str, np.ndarray]:
    """The scenes in memory, keyed as the dataset's features."""
    rng = np.random.default_rng(list(self.seed))
    if not self.attribute:
      images, attrs, _ = scenes.make_scenes(self.num_scenes, rng, self.size, self.lamp_size)
      return {"image": images, **attrs}
    a, b, attrs_a, attrs_b, _ = scenes.scene_pairs(self.num_scenes, self.attribute, rng, self.size,
                                                   self.lamp_size)
    return {"image_a": a, "image_b": b, **attrs_a,
            f"{self.attribute}_b": attrs_b[self.attribute]}


@dataclasses.dataclass
class DashcamScenesConfig(tfds.core.BuilderConfig):
  scenes: ScenesConfig = ScenesConfig(1)


class DashcamScenes(ArrayRecordBuilder):
  """Procedural dashcam scenes (invariance.data.scenes) with their attribute labels; the config is
  the generator's parameters."""

  name = "dashcam_scenes"
  BUILDER_CONFIGS = [DashcamScenesConfig(name=ScenesConfig(1).name)]   # TFDS wants a default

  def _info(self):
    c = self.builder_config.scenes
    labels = {name: tfds.features.ClassLabel(names=list(values))
              for name, values in scenes.ATTRIBUTES.items()}
    if c.attribute:
      images = {"image_a": _image((c.size, c.size, 3)), "image_b": _image((c.size, c.size, 3))}
      labels[f"{c.attribute}_b"] = tfds.features.ClassLabel(
          names=list(scenes.ATTRIBUTES[c.attribute]))
    else:
      images = {"image": _image((c.size, c.size, 3))}
    return self._info_from({**images, **labels}, f"{type(self).__doc__} {c}")

  def arrays(self):
    return self.builder_config.scenes.generate()


# -- building and reading -------------------------------------------------------------------------
class _DropWarnings(std_logging.Filter):
  NOISE = ("Using custom data configuration", "Variant folder")

  def filter(self, record):
    return not str(record.msg).startswith(self.NOISE)


@contextlib.contextmanager
def quiet():
  """Without TFDS's warnings that scenes configs are custom (they all are) and that a dataset's
  folder is still empty (it is, before its first build), and without progress bars."""
  logger, drop = std_logging.getLogger("absl"), _DropWarnings()
  tqdm = tfds.core.utils.tqdm_utils
  active = getattr(tqdm, "_active", True)
  logger.addFilter(drop)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(active)
    logger.removeFilter(drop)


def builder(name: str, data_dir=None, config: Union[ScenesConfig, None] = None
            ) -> ArrayRecordBuilder:
  """The builder of a local dataset (``sklearn_digits``, or ``dashcam_scenes`` with a config)."""
  with quiet():
    if name == SklearnDigits.name and config is None:
      return SklearnDigits(data_dir=data_dir)
    if name == DashcamScenes.name and isinstance(config, ScenesConfig):
      return DashcamScenes(data_dir=data_dir,
                           config=DashcamScenesConfig(name=config.name, scenes=config))
  raise ValueError(f"name={name!r} with config={config!r} is not a local dataset; allowed: "
                   f"{SklearnDigits.name!r} (no config) or {DashcamScenes.name!r} with a "
                   f"ScenesConfig")


def prepare(b: ArrayRecordBuilder) -> ArrayRecordBuilder:
  """Builds ``b`` into its data_dir unless it is already there (one log line); returns a builder
  that reads the prepared files. Safe when several processes build the same dataset at once."""
  if is_prepared(b):
    return b
  try:
    with quiet():
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  except (OSError, ValueError):
    # Another process may have finished the same build first (its rename won): reuse it.
    again = _rebuild(b)
    if not is_prepared(again):
      raise
    return again
  return b


def is_prepared(b: tfds.core.DatasetBuilder) -> bool:
  """``b.is_prepared()`` without TFDS's warning about a dataset folder that is still empty."""
  with quiet():
    return b.is_prepared()


def _rebuild(b: ArrayRecordBuilder) -> ArrayRecordBuilder:
  """A fresh builder for the same dataset (reads what is on disk now)."""
  with quiet():
    return type(b)(data_dir=os.fspath(b.data_dir_root), config=b.builder_config)


def read(b: ArrayRecordBuilder, split: str = SPLIT) -> dict[str, np.ndarray]:
  """Every record of a prepared split, stacked per feature, in stored order.

  The features written here (raw-bytes tensors, integer scalars) are parsed straight from the
  serialized records into one preallocated array per feature, several times faster than TFDS's
  per-record decoding; any other feature falls back to ``tfds.data_source``'s decoding.
  """
  with quiet():
    features = b.info.features
    if all(_fast_kind(f) for f in features.values()):
      raw = b.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
      return _parse(raw.__getitems__(range(len(raw))), features)
    source = b.as_data_source(split)
  return stack(source.__getitems__(range(len(source))))


def _fast_kind(feature) -> str:
  if not isinstance(feature, tfds.features.Tensor):
    return ""
  if feature._encoding == tfds.features.Encoding.BYTES:  # pylint: disable=protected-access
    return "bytes"
  if feature.shape == () and np.issubdtype(feature.np_dtype, np.integer):
    return "int"
  return ""


def _parse(serialized: Sequence[bytes], features) -> dict[str, np.ndarray]:
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=import-outside-toplevel
  maps = [tf_example_pb2.Example.FromString(r).features.feature for r in serialized]
  out = {}
  for key, feature in features.items():
    if _fast_kind(feature) == "bytes":
      array = np.empty((len(maps), *feature.shape), feature.np_dtype)
      rows = array.reshape(len(maps), -1).view(np.uint8)
      for i, m in enumerate(maps):
        rows[i] = np.frombuffer(m[key].bytes_list.value[0], np.uint8)
      out[key] = array
    else:
      out[key] = np.array([m[key].int64_list.value[0] for m in maps], feature.np_dtype)
  return out


def stack(records: Sequence[dict]) -> dict[str, np.ndarray]:
  """Records (dicts of numpy values) stacked into arrays per feature; object arrays where sizes
  differ (e.g. images of different sizes)."""
  if not len(records):
    raise ValueError("records is empty; allowed: at least one record")
  out = {}
  for key in records[0]:
    values = [np.asarray(r[key]) for r in records]
    try:
      out[key] = np.stack(values)
    except ValueError:  # variable-size feature
      out[key] = np.empty(len(values), dtype=object)
      out[key][:] = values
  return out
