"""The dashcam caption studies' shared setup: sizes, attributes, prompts and random streams.

The contrastive study trains dual encoders on captioned scenes; the recovery study starts from
that study's p = 0 model (trained with the same streams, or loaded from its workdir). Both draw
every split from its own numpy stream ``np.random.default_rng([seed, k])``:

  =====================  ===  =====================================================================
  ``TRAIN``               0   training scenes (both studies)
  ``PROBE_TRAIN``         1   contrastive: probe training split
  ``PROBE_TEST``          2   contrastive: probe test split
  ``PAIRS``               3   contrastive: counterfactual scene pairs, sub-stream i per attribute
  ``CAPTIONS``            4   the training captions (one stream for every p: nested curation)
  ``RECAPTIONS``          5   recovery: re-captioned training scenes (one stream for every f)
  ``LABELLED``           10   recovery: the labelled pool (its first n scenes: nested label sets)
  ``HELD_OUT``           11   recovery: the held-out test scenes
  ``VALIDATION``         12   recovery: the fixed validation scenes of early stopping
  =====================  ===  =====================================================================

Captions for every p are drawn from one stream: each scene's template and mention coin are the
same for every p, so the scenes that mention the attribute at a smaller p also mention it at every
larger p. JAX keys of a seed: ``init_key`` (dual encoder init), ``contrastive_key`` (its training
steps), ``head_key`` (a classifier's init), ``tune_key`` (the classifier's training steps); the
batch order of a run is ``pipeline.train_batch_fn(..., seed=seed)`` (``fit_dual_encoder``).
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
import optax

from invariance import dual_encoder as de
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import pipeline
from invariance.data import scenes
from invariance.data import sources

IMAGE_SIZE = 32
ATTRIBUTES = tuple(scenes.ATTRIBUTES)                 # car_color, light, pedestrian, clouds
LIGHT = "light"                                       # what p = 0 captions never mention
# Zero-shot prompts per attribute, one per value (scenes.ATTRIBUTES order); none is a training
# caption ("photo" is not in the caption vocabulary and maps to <unk>).
ZERO_SHOT = {
    "car_color": ("a photo of a {value} car", "a {value} car on the road"),
    LIGHT: ("a photo of a {value} traffic light", "the traffic light ahead is {value}"),
}
EVAL_BATCH = 500

TRAIN, PROBE_TRAIN, PROBE_TEST, PAIRS, CAPTIONS, RECAPTIONS = 0, 1, 2, 3, 4, 5
LABELLED, HELD_OUT, VALIDATION = 10, 11, 12


def rng(seed: int, stream: int, *sub: int) -> np.random.Generator:
  """The numpy stream ``[seed, stream, *sub]`` (see module docstring)."""
  return np.random.default_rng([seed, stream, *sub])


def make_scenes(seed: int, stream: int, n: int, data_dir=None, lamp_size: int = 2
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """``n`` scenes of a stream: (images (n, IMAGE_SIZE, IMAGE_SIZE, 3), attrs), read with
  ``tfds.data_source`` from the local TFDS dataset of the generator's draws from stream
  ``[seed, stream]`` (built into ``data_dir`` on first use)."""
  return sources.load_scenes(n, (seed, stream), size=IMAGE_SIZE, data_dir=data_dir,
                             lamp_size=lamp_size)


def make_pairs(seed: int, n: int, data_dir=None, lamp_size: int = 2
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{attribute: (images_a, images_b)}``: ``n`` scene pairs per attribute that differ in that
  attribute only (same nuisance), from the TFDS dataset of stream ``[seed, PAIRS, i]``."""
  return {attr: sources.load_scene_pairs(n, attr, (seed, PAIRS, i), size=IMAGE_SIZE,
                                         data_dir=data_dir, lamp_size=lamp_size)[:2]
          for i, attr in enumerate(ATTRIBUTES)}


def make_captions(attrs: dict[str, np.ndarray], seed: int, p: float, attribute: str,
                  stream: int = CAPTIONS, policy: str = "mention") -> list[str]:
  """The captions of the training scenes: under ``mention`` the car, plus ``attribute`` with
  probability ``p``; under ``swap`` ``attribute``, plus the car with probability ``p``."""
  return captions_lib.make_captions(attrs, policy, rng(seed, stream), p=p, attribute=attribute)


def varied(policy: str, attribute: str) -> str:
  """The attribute a policy mentions with probability p (``swap``: the car colour)."""
  return "car_color" if policy == "swap" else attribute


def prompts(attribute: str, template: str) -> list[str]:
  """One zero-shot prompt per value of ``attribute`` (in ``scenes.ATTRIBUTES`` order, the label
  order), e.g. ``prompts("light", ZERO_SHOT["light"][0])``."""
  return [template.format(value=v) for v in scenes.ATTRIBUTES[attribute]]


def run_key(loss: str, p: float, dim: int, *, policy: str = "mention", lamp_size: int = 2,
            multi_positive: bool = False, steps=None) -> str:
  """The name of a contrastive run (its checkpoint and metrics directory), e.g. ``clip_p0_d8``,
  with a suffix for each setting off the default (``_swap``, ``_lamp4``, ``_multipos``, and
  ``_t100`` for a training length other than the study's longest); the recovery study's
  starting points are ``run_key(loss, 0.0, dim)`` and ``run_key(loss, 1.0, dim)``."""
  key = f"{loss}_p{p:g}_d{dim}"
  key += f"_{policy}" if policy != "mention" else ""
  key += f"_lamp{lamp_size}" if lamp_size != 2 else ""
  key += "_multipos" if multi_positive else ""
  return key + (f"_t{steps}" if steps is not None else "")


def init_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


def contrastive_key(seed: int) -> jax.Array:
  return jax.random.key(seed + 10_000)


def head_key(seed: int) -> jax.Array:
  return jax.random.key(seed + 20_000)


def tune_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


class SeedData:
  """The scenes of one seed (lamps of ``lamp_size``), each (stream, n) drawn once, when first asked
  for."""

  def __init__(self, seed: int, data_dir=None, lamp_size: int = 2):
    self.seed, self.data_dir, self.lamp_size = seed, data_dir, lamp_size
    self._scenes: dict = {}
    self._pairs: dict = {}

  def scenes(self, stream: int, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if (stream, n) not in self._scenes:
      self._scenes[(stream, n)] = make_scenes(self.seed, stream, n, self.data_dir, self.lamp_size)
    return self._scenes[(stream, n)]

  def pairs(self, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if n not in self._pairs:
      self._pairs[n] = make_pairs(self.seed, n, self.data_dir, self.lamp_size)
    return self._pairs[n]

  def captions(self, n_train: int, p: float, attribute: str, stream: int = CAPTIONS,
               policy: str = "mention") -> list[str]:
    """Captions of the ``n_train`` training scenes (stream ``TRAIN``) from ``stream``."""
    return make_captions(self.scenes(TRAIN, n_train)[1], self.seed, p, attribute, stream, policy)


def fit_dual_encoder(model: de.Jitted, params, images_NHWC, captions: Sequence[str],
                     tokenizer: captions_lib.Tokenizer, batch_size: int, seed: int,
                     optimizer: optax.GradientTransformation, config: train.TrainConfig,
                     schedule=None):
  """Contrastive training of a dual encoder on captioned scenes, in the seed's batch order and with
  its step key (``contrastive_key``): the contrastive study's runs and the recovery study's
  pretraining and re-captioning. Returns ``train.fit``'s (params, history)."""
  arrays = {"images": images_NHWC, "tokens": tokenizer.encode(captions)}
  batch_at = pipeline.train_batch_fn(arrays, batch_size, seed=seed)
  return train.fit(model.loss_fn, params, batch_at, optimizer, config, contrastive_key(seed),
                   schedule=schedule, project=model.project)


def fit_classifier(loss_fn, params, images_NHWC, labels_N, batch_size: int, seed: int,
                   optimizer: optax.GradientTransformation, config: train.TrainConfig,
                   schedule=None, validate=None):
  """Supervised training of a classifier (e.g. ``dual_encoder.make_classifier_loss_fn``) on
  labelled scenes, in the seed's batch order and with its step key (``tune_key``): the recovery
  study's trained methods (``validate``: for ``config.early_stopping``). Returns ``train.fit``'s
  (params, history)."""
  batch_at = pipeline.train_batch_fn({"images": images_NHWC, "labels": labels_N}, batch_size,
                                     seed=seed)
  return train.fit(loss_fn, params, batch_at, optimizer, config, tune_key(seed),
                   schedule=schedule, validate=validate)
