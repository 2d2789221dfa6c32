"""The orbit model: average the penultimate features over a group orbit, then apply the head.

    f_orbit(x) = head( mean_{g in G} phi(g . x) )

* ``mode="full"``    - every element of G: exactly invariant (the orbit of g.x is the orbit of x).
* ``mode="sampled"`` - k elements drawn uniformly (with replacement, optionally from a support) per
                       example: an unbiased estimate of the full orbit's feature mean.
* ``mode="fast"``    - the full *translation* orbit of an ``MLP`` whose first layer is dense: its
                       responses to all |G| = H*W cyclic shifts are one circular cross-correlation,
                       computed with real-DFT matmuls instead of |G| dense matmuls (``FlatDense.all_shifts``,
                       ``MLP.translation_orbit_mean``).

Because the head is linear in the features, the orbit model's logits are the mean of the logits of
the transformed copies; cross-entropy is convex in the logits, so by Jensen
    CE(f_orbit(x), y) <= mean_g CE(f(g . x), y),
i.e. training on augmented copies minimises an upper bound of the orbit model's loss.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import chex
import flax.linen as nn
import jax

from invariance import encoders
from invariance import groups as groups_lib

MODES = ("full", "sampled", "fast")


def _embed(model: nn.Module, params, x_NHWC):
  return model.apply(params, x_NHWC, method=model.embed)


def _classify(model: nn.Module, params, features):
  return model.apply(params, features, method=model.classify)


def orbit_features(model: nn.Module, params, x_NHWC, group: groups_lib.Group,
                   elements: Optional[Any] = None):
  """Naive orbit features: mean over ``elements`` (default all of G) of phi(g . x) -> (N, F).

  All transformed copies go through the encoder as one batch of |elements| * N images.
  """
  orbit_GNHWC = group.orbit(x_NHWC, elements)
  g, n = orbit_GNHWC.shape[:2]
  feats = _embed(model, params, orbit_GNHWC.reshape((g * n,) + x_NHWC.shape[1:]))
  return feats.reshape(g, n, -1).mean(axis=0)


def translation_orbit_features(model: nn.Module, params, x_NHWC):
  """Fast path: mean over all cyclic shifts of an MLP's features, first layer by DFT matmuls
  (``MLP.translation_orbit_mean``) -> (N, F)."""
  if not isinstance(model, encoders.MLP):
    raise ValueError(f"the fast translation-orbit path needs an MLP, got {type(model).__name__}")
  return model.apply(params, x_NHWC, method=model.translation_orbit_mean)


def sample_elements(group: groups_lib.Group, key, num_samples: int, batch_size: int,
                    support=None):
  """The sampled orbit's elements: (K, N) ints, each drawn uniformly (with replacement) from G or
  from ``support``. Every entry's marginal is uniform, which is what makes the sampled orbit mean
  unbiased (tests check the counts)."""
  return group.sample(key, (num_samples, batch_size), support)


def sampled_orbit_features(model: nn.Module, params, x_NHWC, group: groups_lib.Group, key,
                           num_samples: int, support=None):
  """Mean of phi(g_i . x) over ``num_samples`` random elements per example -> (N, F); the elements
  are ``sample_elements(group, key, num_samples, N, support)``."""
  n = x_NHWC.shape[0]
  g_KN = sample_elements(group, key, num_samples, n, support)
  copies = jax.vmap(group.act, in_axes=(0, None))(g_KN, x_NHWC)       # K, N, H, W, C
  feats = _embed(model, params, copies.reshape((num_samples * n,) + x_NHWC.shape[1:]))
  return feats.reshape(num_samples, n, -1).mean(axis=0)


@dataclasses.dataclass(frozen=True)
class OrbitModel:
  """Wraps an encoder (anything with ``embed``/``classify``) into an orbit model.

  ``init(key, x)`` / ``apply(params, x, key=None)`` like a linen module; ``key`` is needed only
  for ``mode="sampled"``.
  """

  model: nn.Module
  group: groups_lib.Group
  mode: str = "full"
  num_samples: int = 1
  support: Optional[Any] = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode={self.mode!r}; allowed: {', '.join(MODES)}")
    if self.mode == "sampled" and not 1 <= self.num_samples:
      raise ValueError(f"num_samples={self.num_samples} must be >= 1")
    if self.mode == "fast" and not (isinstance(self.model, encoders.MLP)
                                    and isinstance(self.group, groups_lib.Translations)):
      raise ValueError("mode='fast' needs an MLP encoder and the Translations group")

  def init(self, key, x_NHWC):
    return self.model.init(key, x_NHWC)

  def features(self, params, x_NHWC, key=None):
    if self.mode == "full":
      return orbit_features(self.model, params, x_NHWC, self.group)
    if self.mode == "fast":
      return translation_orbit_features(self.model, params, x_NHWC)
    if key is None:
      raise ValueError("mode='sampled' needs a PRNG key")
    return sampled_orbit_features(self.model, params, x_NHWC, self.group, key, self.num_samples,
                                  self.support)

  def apply(self, params, x_NHWC, key=None):
    feats = self.features(params, x_NHWC, key)
    logits = _classify(self.model, params, feats)
    chex.assert_rank(logits, 2)
    return logits


def augmented_logits(model: nn.Module, params, x_NHWC, group: groups_lib.Group, elements=None):
  """Logits of the plain model on every transformed copy: (|elements|, N, classes)."""
  orbit_GNHWC = group.orbit(x_NHWC, elements)
  g, n = orbit_GNHWC.shape[:2]
  logits = model.apply(params, orbit_GNHWC.reshape((g * n,) + x_NHWC.shape[1:]))
  return logits.reshape(g, n, -1)


def jensen_gap(model: nn.Module, params, x_NHWC, labels, group: groups_lib.Group, elements=None):
  """(orbit-model cross-entropy, mean cross-entropy over augmented copies), per example.

  The first is never larger than the second (Jensen); returns both so callers can count
  violations and report the gap.
  """
  import optax  # local: only this helper needs it

  logits_GNK = augmented_logits(model, params, x_NHWC, group, elements)
  orbit_loss = optax.softmax_cross_entropy_with_integer_labels(logits_GNK.mean(0), labels)
  aug_loss = jax.vmap(lambda lg: optax.softmax_cross_entropy_with_integer_labels(lg, labels))(
      logits_GNK).mean(0)
  return orbit_loss, aug_loss


__all__ = ["OrbitModel", "orbit_features", "translation_orbit_features", "sample_elements",
           "sampled_orbit_features", "augmented_logits", "jensen_gap", "MODES"]
