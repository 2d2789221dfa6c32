"""Linear probes on frozen features (scikit-learn): what information does a representation keep?

A probe standardises the features (statistics of the training split only) and fits a multinomial
logistic regression; its accuracy on held-out examples says how linearly decodable a label is.
Chance is ``1 / classes`` for balanced labels (``chance``), e.g. 25% for car colour, 50% for the
light. Everything here is numpy in, floats out; scikit-learn is imported lazily.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MAX_ITER = 2000


def _as_2d(name: str, x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim < 2 or x.shape[0] < 1:
    raise ValueError(f"{name} has shape {x.shape}; allowed: (N, ...) with N >= 1 examples")
  return x.reshape(x.shape[0], -1)


def _as_labels(name: str, y, n: int) -> np.ndarray:
  y = np.asarray(y)
  if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name} has shape {y.shape} dtype {y.dtype}; allowed: ints of shape ({n},)")
  return y


def linear_probe(features_train, labels_train, features_test, labels_test,
                 c: float = 1.0, seed: int = 0) -> float:
  """Held-out accuracy of standardise + LogisticRegression fitted on the training split.

  Features of any shape (N, ...) are flattened. If the training labels hold a single class the
  probe predicts it (accuracy = that class's share of the test labels).
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel

  x_tr, x_te = _as_2d("features_train", features_train), _as_2d("features_test", features_test)
  if x_tr.shape[1] != x_te.shape[1]:
    raise ValueError(f"features_train has {x_tr.shape[1]} features but features_test has "
                     f"{x_te.shape[1]}; allowed: the same feature dimension")
  y_tr = _as_labels("labels_train", labels_train, x_tr.shape[0])
  y_te = _as_labels("labels_test", labels_test, x_te.shape[0])
  classes = np.unique(y_tr)
  if len(classes) == 1:
    return float(np.mean(y_te == classes[0]))
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel

  probe = make_pipeline(StandardScaler(),
                        LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed))
  # One BLAS thread: beside XLA's threads on a small machine, scikit-learn's BLAS threads made one
  # probe on 2048 x 128 features 7x slower (16 s vs 2.4 s, measured here).
  with threadpool_limits(limits=1):
    probe.fit(x_tr, y_tr)
    return float(probe.score(x_te, y_te))


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 7))


def ridge_probes(features_train, attrs_train: Mapping[str, np.ndarray], features_test,
                 attrs_test: Mapping[str, np.ndarray], alphas=RIDGE_ALPHAS
                 ) -> dict[str, tuple[float, tuple[float, ...]]]:
  """``{attribute: (held-out accuracy, alphas)}``: standardise, then one-vs-rest ridge regression
  onto +-1 class indicators, predicting the class of largest score. Each indicator's
  regularisation is chosen from ``alphas`` by exact leave-one-out cross-validation on the training
  split alone (scikit-learn's ``RidgeCV(alpha_per_target=True)``), so layers of very different
  widths each get the regularisation that suits them; all attributes share one fit (one
  eigendecomposition), which makes a probe of every layer at every checkpoint affordable. Features
  of any shape (N, ...) are flattened.
  """
  from sklearn.linear_model import RidgeCV  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel

  x_tr, x_te = _as_2d("features_train", features_train), _as_2d("features_test", features_test)
  if x_tr.shape[1] != x_te.shape[1]:
    raise ValueError(f"features_train has {x_tr.shape[1]} features but features_test has "
                     f"{x_te.shape[1]}; allowed: the same feature dimension")
  missing = sorted(set(attrs_train) ^ set(attrs_test))
  if missing:
    raise ValueError(f"attrs_train and attrs_test differ in attributes {missing}; allowed: the "
                     "same attribute keys")
  columns, spans = [], {}
  for name in attrs_train:
    y_tr = _as_labels(f"attrs_train[{name!r}]", attrs_train[name], x_tr.shape[0])
    _as_labels(f"attrs_test[{name!r}]", attrs_test[name], x_te.shape[0])
    classes = np.unique(y_tr)
    spans[name] = (sum(len(c) for c in columns), classes)
    columns.append([np.where(y_tr == c, 1.0, -1.0) for c in classes])
  targets = np.stack([c for cols in columns for c in cols], axis=1)
  scaler = StandardScaler().fit(x_tr)
  ridge = RidgeCV(alphas=alphas, alpha_per_target=True).fit(scaler.transform(x_tr), targets)
  scores = ridge.predict(scaler.transform(x_te)).reshape(len(x_te), -1)
  chosen = np.broadcast_to(ridge.alpha_, (targets.shape[1],))
  out = {}
  for name, (start, classes) in spans.items():
    block = scores[:, start:start + len(classes)]
    predicted = classes[np.argmax(block, axis=1)] if len(classes) > 1 else np.full(
        len(x_te), classes[0])
    out[name] = (float(np.mean(predicted == np.asarray(attrs_test[name]))),
                 tuple(float(a) for a in chosen[start:start + len(classes)]))
  return out


def chance(labels) -> float:
  """Accuracy of always predicting the most frequent label (the probe's floor)."""
  _, counts = np.unique(np.asarray(labels), return_counts=True)
  return float(counts.max() / counts.sum())


def label_curve(features_train, labels_train, features_test, labels_test, sizes,
                draws: Sequence[int]) -> dict[int, list[float]]:
  """``{n: [held-out accuracy of each draw]}``: a ridge probe (``ridge_probes``: regularisation
  chosen by leave-one-out cross-validation inside the n labels) fit on n training examples drawn
  without replacement (one draw per seed of ``draws``), scored on all test examples. ``n`` larger
  than the training set is capped at it (one draw then suffices, but each seed is still a row)."""
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
  x_tr = _as_2d("features_train", features_train)
  y_tr = _as_labels("labels_train", labels_train, x_tr.shape[0])
  out = {}
  # One BLAS thread: beside XLA's threads (and other work) on a small machine, BLAS threads made a
  # curve of 768-wide features 20x slower here (18 s vs 0.8 s).
  with threadpool_limits(limits=1):
    for n in sizes:
      n = min(int(n), len(y_tr))
      accs = []
      for seed in draws:
        pick = np.random.default_rng(seed).permutation(len(y_tr))[:n]
        (acc, _), = ridge_probes(x_tr[pick], {"y": y_tr[pick]}, features_test,
                                 {"y": np.asarray(labels_test)}).values()
        accs.append(acc)
      out[n] = accs
  return out


def ridge_classifier(features_train, labels_train, alphas=RIDGE_ALPHAS):
  """A fitted ridge probe as a function ``features (N, ...) -> class scores (N, K)`` (standardise,
  ``RidgeClassifierCV`` with leave-one-out choice of the regularisation): the classifier the
  invariance audit and the placement maps apply to a frozen tower's features."""
  from sklearn.linear_model import RidgeClassifierCV  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  x_tr = _as_2d("features_train", features_train)
  y_tr = _as_labels("labels_train", labels_train, x_tr.shape[0])
  if len(np.unique(y_tr)) < 2:
    raise ValueError("labels_train hold one class; allowed: at least two classes")
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
  scaler = StandardScaler().fit(x_tr)
  with threadpool_limits(limits=1):
    clf = RidgeClassifierCV(alphas=alphas).fit(scaler.transform(x_tr), y_tr)

  def scores(features):
    s = clf.decision_function(scaler.transform(_as_2d("features", features)))
    return np.stack([-s, s], 1) if s.ndim == 1 else s

  return scores
