"""The project's generated datasets as TFDS builders (array_record): cached, versioned, offline.

* ``placed_digits``  - sklearn digits placed on a canvas: splits ``train`` and ``test_in`` (in the
  config's support) and ``test_out`` (in its complement). Features: ``image`` (H, W, 1) float32,
  ``label``, ``position`` (row, col), ``index``.
* ``dashcam_scenes`` - procedural scenes: splits ``train`` and ``test``. Features: ``image``
  (S, S, 3) float32, the four attributes as ClassLabels, ``caption_salient``, ``caption_full``,
  ``index``.

Building needs no network and no TensorFlow: images are stored as float32 ``Tensor`` features (raw
bytes, exact round trip; TFDS's ``Image`` feature would need TensorFlow to PNG-encode numpy
arrays). Read back with ``tfds.data_source("dashcam_scenes/<config>", split=..., data_dir=...)``
or ``sources.read_tfds``; records come back in TFDS's (deterministic, shuffled) order, so
``index`` gives each example's position in generation order. This module imports
tensorflow_datasets at import time; ``invariance.data`` only imports it on first use.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from invariance.data import captions, curation, scenes, sources

FILE_FORMAT = "array_record"


def _offline_config() -> tfds.download.DownloadConfig:
  return tfds.download.DownloadConfig(try_download_gcs=False)


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A generator builder that writes array_record by default and never downloads."""

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

  def _info_from(self, features: dict, description: str, supervised=None) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs would look for metadata files next to code.
    return tfds.core.DatasetInfo(builder=self, description=description,
                                 features=tfds.features.FeaturesDict(features),
                                 supervised_keys=supervised)


@dataclasses.dataclass
class PlacedDigitsConfig(tfds.core.BuilderConfig):
  """Canvas side, named support (test_out uses its complement half), seed, examples per split."""

  canvas: int = 24
  support: str = "bottom"
  seed: int = 0
  max_examples: int = 0        # > 0: keep only the first max_examples of each split (tests)


def placed_digits_splits(config: PlacedDigitsConfig) -> dict[str, dict[str, np.ndarray]]:
  """The placed-digits splits as arrays, exactly as the builder writes them."""
  digits = sources.load_digits(seed=config.seed)
  splits = curation.curated_splits(digits.train_images, digits.train_labels, digits.test_images,
                                   digits.test_labels, (config.canvas, config.canvas),
                                   config.support, np.random.default_rng(config.seed))
  out = {}
  for name, split in splits.items():
    n = len(split["labels"])
    keep = slice(0, min(n, config.max_examples or n))
    out[name] = {"image": split["images"][keep], "label": split["labels"][keep],
                 "position": split["positions"][keep], "index": np.arange(n)[keep]}
  return out


class PlacedDigits(ArrayRecordBuilder):
  """sklearn 8x8 digits placed on a canvas at positions from a support."""

  BUILDER_CONFIGS = [PlacedDigitsConfig(name=f"{s}_24", canvas=24, support=s)
                     for s in curation.COMPLEMENT]

  def _info(self):
    c = self.builder_config
    features = {
        "image": tfds.features.Tensor(shape=(c.canvas, c.canvas, 1), dtype=np.float32),
        "label": tfds.features.ClassLabel(num_classes=10),
        "position": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        "index": tfds.features.Scalar(dtype=np.int64),
    }
    return self._info_from(features, type(self).__doc__, supervised=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {name: self._generate_examples(split)
            for name, split in placed_digits_splits(self.builder_config).items()}

  def _generate_examples(self, split):
    for i in range(len(split["label"])):
      yield i, {k: v[i] for k, v in split.items()}


@dataclasses.dataclass
class DashcamScenesConfig(tfds.core.BuilderConfig):
  """Image side, split sizes and seed (train uses seed, test seed + 1)."""

  size: int = 32
  num_train: int = 8192
  num_test: int = 2048
  seed: int = 0


def dashcam_split(config: DashcamScenesConfig, split: str) -> dict[str, np.ndarray]:
  """A split of the dashcam dataset as arrays, exactly as the builder writes it."""
  seed, n = {"train": (config.seed, config.num_train), "test": (config.seed + 1, config.num_test)}[
      split]
  rng = np.random.default_rng(seed)
  images, attrs, _ = scenes.make_scenes(n, rng, config.size)
  return {"image": images, **attrs,
          "caption_salient": np.array(captions.make_captions(attrs, "salient", rng)),
          "caption_full": np.array(captions.make_captions(attrs, "full", rng)),
          "index": np.arange(n)}


class DashcamScenes(ArrayRecordBuilder):
  """Procedural dashcam scenes with attribute labels and salient / full captions."""

  BUILDER_CONFIGS = [DashcamScenesConfig(name="default")]

  def _info(self):
    c = self.builder_config
    features = {
        "image": tfds.features.Tensor(shape=(c.size, c.size, 3), dtype=np.float32),
        **{name: tfds.features.ClassLabel(names=list(values))
           for name, values in scenes.ATTRIBUTES.items()},
        "caption_salient": tfds.features.Text(),
        "caption_full": tfds.features.Text(),
        "index": tfds.features.Scalar(dtype=np.int64),
    }
    return self._info_from(features, type(self).__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in ("train", "test")}

  def _generate_examples(self, split):
    arrays = dashcam_split(self.builder_config, split)
    for i in range(len(arrays["index"])):
      yield i, {k: v[i] for k, v in arrays.items()}


BUILDERS = {"placed_digits": PlacedDigits, "dashcam_scenes": DashcamScenes}


def build(name: str, data_dir, config: Union[str, tfds.core.BuilderConfig, None] = None
          ) -> tfds.core.DatasetBuilder:
  """Build (or reuse, if already prepared) one of ``BUILDERS`` under ``data_dir``, offline.

  ``config`` is a config name of the builder or a config object (e.g. a small
  ``DashcamScenesConfig(name="tiny", num_train=64, num_test=32)``). Read it back with
  ``tfds.data_source(f"{name}/{config_name}", split=..., data_dir=data_dir)``.
  """
  if name not in BUILDERS:
    raise ValueError(f"name={name!r} is not a generated dataset; allowed: {', '.join(BUILDERS)}")
  cls = BUILDERS[name]
  names = [c.name for c in cls.BUILDER_CONFIGS]
  if isinstance(config, str) and config not in names:
    raise ValueError(f"config={config!r} is not a config of {name}; allowed: {', '.join(names)} "
                     f"or a {type(cls.BUILDER_CONFIGS[0]).__name__} object")
  config_cls = type(cls.BUILDER_CONFIGS[0])
  if config is not None and not isinstance(config, (str, config_cls)):
    raise ValueError(f"config={config!r} is invalid for {name}; allowed: a config name or a "
                     f"{config_cls.__name__}")
  if data_dir is None:
    raise ValueError("data_dir=None is invalid; allowed: a directory to build the dataset into")
  builder = cls(data_dir=data_dir, config=config)
  builder.download_and_prepare(download_config=_offline_config())
  return builder
