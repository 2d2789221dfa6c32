"""Evaluators shared by the studies (importable from a notebook; no absl).

* ``batched_apply(fn, images, batch)`` - any function over fixed-size, zero-padded batches.
* ``layer_report(features_fn, train, test, pairs, layers)`` - for every layer and attribute, a
  ridge probe with cross-validated regularisation (``probes.ridge_probes``) and the paired
  counterfactual sensitivity (``pair_sensitivity``): run it on the trained and the initial
  parameters (and on checkpoints through training) to tell "removed" from "never learned".
* ``zero_shot(image_emb, class_embs, labels)`` - accuracy of the most similar class embedding.
* ``PoolProbes(pool, test)`` - label efficiency: probes fit on the first n scenes of one labelled
  pool (nested label sets), for the features of many models, each computed once.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from invariance import probes


def batched_apply(fn, images, batch: int):
  """``fn`` over fixed-size batches of ``images`` (the last zero-padded, so ``fn`` compiles once);
  the outputs (an array or a dict of arrays) are concatenated and cut back to ``len(images)``.
  ``images`` may also be a tuple of arrays of the same length, batched together."""
  n = len(jax.tree.leaves(images)[0])
  padded = jax.tree.map(
      lambda a: np.concatenate([a, np.zeros((-n % batch,) + a.shape[1:], a.dtype)]), images)
  outs = [jax.device_get(fn(jax.tree.map(lambda a: a[i:i + batch], padded)))
          for i in range(0, n + (-n % batch), batch)]
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outs)


def pair_sensitivity(feats_a: Mapping[str, np.ndarray], feats_b: Mapping[str, np.ndarray]
                     ) -> dict[str, float]:
  """``{layer: mean ||f(a) - f(b)|| / mean ||f(a) - f(b')||}`` for the features of counterfactual
  pairs (a, b) (one attribute flipped, same nuisance), where b' is the next pair's b (an unrelated
  scene): 0 when the layer ignores the attribute, about 1 when flipping it moves the features as
  far as replacing the whole scene."""
  out = {}
  for layer, f_a in feats_a.items():
    f_a = np.asarray(f_a, np.float64).reshape(len(f_a), -1)
    f_b = np.asarray(feats_b[layer], np.float64).reshape(len(f_a), -1)
    paired = np.linalg.norm(f_a - f_b, axis=1).mean()
    unrelated = np.linalg.norm(f_a - np.roll(f_b, 1, axis=0), axis=1).mean()
    out[layer] = float(paired / unrelated) if unrelated > 0 else 0.0    # constant: ignores all
  return out


def layer_report(features_fn: Callable, train: tuple, test: tuple, pairs: Mapping[str, tuple],
                 layers: Sequence[str], batch: int = 500) -> dict:
  """What each layer of ``features_fn`` (``images -> {layer: (N, ...)}``) keeps of each attribute:

  ``{"probe": {layer: {attribute: accuracy}}, "alpha": {layer: {attribute: [ridge alphas]}},
  "sensitivity": {layer: {attribute: pair_sensitivity}}}``; ``train`` / ``test`` are the probe
  splits ``(images, {attribute: labels})``, ``pairs`` ``{attribute: (images_a, images_b)}``.
  """
  keep = lambda x: {k: v for k, v in features_fn(x).items() if k in layers}
  (x_tr, attrs_tr), (x_te, attrs_te) = train, test
  f_tr, f_te = batched_apply(keep, x_tr, batch), batched_apply(keep, x_te, batch)
  missing = sorted(set(layers) - set(f_tr))
  if missing:
    raise ValueError(f"layers {missing} are not among the features; allowed: names of "
                     "features_fn's outputs")
  report = {"probe": {}, "alpha": {}, "sensitivity": {}}
  for layer in layers:
    got = probes.ridge_probes(f_tr[layer], attrs_tr, f_te[layer], attrs_te)
    report["probe"][layer] = {a: acc for a, (acc, _) in got.items()}
    report["alpha"][layer] = {a: list(alphas) for a, (_, alphas) in got.items()}
  for attribute, (images_a, images_b) in pairs.items():
    per_layer = pair_sensitivity(batched_apply(keep, images_a, batch),
                                 batched_apply(keep, images_b, batch))
    for layer in layers:
      report["sensitivity"].setdefault(layer, {})[attribute] = per_layer[layer]
  return report


def zero_shot(image_emb_ND, class_embs: Mapping[str, np.ndarray], labels_N) -> dict[str, float]:
  """``{name: accuracy}``: each image's class is the row of ``class_embs[name]`` (K, D), e.g. one
  text prompt per class, with the largest dot product."""
  image_emb_ND, labels_N = np.asarray(image_emb_ND), np.asarray(labels_N)
  return {name: float(np.mean(np.argmax(image_emb_ND @ np.asarray(emb_KD).T, axis=1) == labels_N))
          for name, emb_KD in class_embs.items()}


class PoolProbes:
  """Linear probes fit on a labelled pool and scored on a held-out split, for many models.

  ``pool`` and ``test`` are ``(images (N, ...), {attribute: labels (N,)})``. ``features(name, fn)``
  applies ``fn`` (``images -> {layer: features}``) to both splits once per ``name`` (the
  model's cache id); ``probe(name, layer, attribute, n)`` is the held-out accuracy of a probe fit
  on the first ``n`` pool examples (all of them when None), so the label sets of growing n are
  nested;
  ``accuracy(name, layer, attribute)`` scores a classifier's own logits (argmax) instead.
  """

  def __init__(self, pool: tuple, test: tuple, batch: int = 500):
    self.pool, self.test, self.batch = pool, test, batch
    self._features: dict = {}
    self._probes: dict = {}

  def features(self, name, fn: Callable) -> dict:
    if name not in self._features:
      self._features[name] = {split: batched_apply(fn, images, self.batch)
                             for split, (images, _) in (("pool", self.pool), ("test", self.test))}
    return self._features[name]

  def probe(self, name, layer: str, attribute: str, n=None) -> float:
    if (name, layer, attribute, n) not in self._probes:
      f = self._features[name]
      self._probes[(name, layer, attribute, n)] = probes.linear_probe(
          f["pool"][layer][:n], self.pool[1][attribute][:n], f["test"][layer],
          self.test[1][attribute])
    return self._probes[(name, layer, attribute, n)]

  def accuracy(self, name, layer: str, attribute: str) -> float:
    logits_NK = self._features[name]["test"][layer]
    return float(np.mean(np.argmax(logits_NK, axis=-1) == self.test[1][attribute]))
