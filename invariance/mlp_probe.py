"""A small nonlinear probe beside the ridge probe: "not decodable" must mean more than "not linear".

``mlp_probes(features_train, attrs_train, features_test, attrs_test)``: per attribute, standardise,
then a one-hidden-layer MLP (scikit-learn ``MLPClassifier``, ReLU, L-BFGS, ``HIDDEN`` units) whose L2
penalty is chosen from ``ALPHAS`` by ``FOLDS``-fold stratified cross-validation on the training
split alone, refit on the whole training split and scored on the test split. Returns
``{attribute: (held-out accuracy, chosen alpha)}``. Deterministic for a given ``seed``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

HIDDEN = 32
ALPHAS = (1e-2, 1.0, 10.0)
FOLDS = 3
MAX_ITER = 200


def _classifier(alpha: float, seed: int):
  from sklearn.neural_network import MLPClassifier  # pylint: disable=import-outside-toplevel
  return MLPClassifier((HIDDEN,), alpha=alpha, solver="lbfgs", max_iter=MAX_ITER,
                       random_state=seed)


def mlp_probes(features_train, attrs_train: Mapping[str, np.ndarray], features_test,
               attrs_test: Mapping[str, np.ndarray], alphas=ALPHAS, folds: int = FOLDS,
               seed: int = 0) -> dict[str, tuple[float, float]]:
  """``{attribute: (held-out accuracy, alpha chosen by cross-validation)}`` (see module doc)."""
  import warnings  # pylint: disable=import-outside-toplevel
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=import-outside-toplevel
  from sklearn.model_selection import StratifiedKFold  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel

  x_tr = np.asarray(features_train, np.float64).reshape(len(features_train), -1)
  x_te = np.asarray(features_test, np.float64).reshape(len(features_test), -1)
  if x_tr.shape[1] != x_te.shape[1]:
    raise ValueError(f"features_train has {x_tr.shape[1]} features but features_test has "
                     f"{x_te.shape[1]}; allowed: the same feature dimension")
  if set(attrs_train) != set(attrs_test):
    raise ValueError(f"attrs_train {sorted(attrs_train)} and attrs_test {sorted(attrs_test)} "
                     "differ; allowed: the same attribute keys")
  if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
    raise ValueError(f"folds={folds!r} is invalid; allowed: an int >= 2")
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel

  scaler = StandardScaler().fit(x_tr)
  x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
  out = {}
  # One BLAS thread (as invariance.probes): beside XLA's threads and other jobs on a 2-core
  # machine, OpenBLAS's threads made these fits 4-5x slower (measured: 184 s vs 40 s, load ~10).
  with warnings.catch_warnings(), threadpool_limits(limits=1):
    warnings.simplefilter("ignore", ConvergenceWarning)
    for name in attrs_train:
      y_tr, y_te = np.asarray(attrs_train[name]), np.asarray(attrs_test[name])
      if len(np.unique(y_tr)) < 2:
        out[name] = (float(np.mean(y_te == y_tr[0])), float("nan"))
        continue
      splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x_tr, y_tr))
      scores = [np.mean([_classifier(a, seed).fit(x_tr[i], y_tr[i]).score(x_tr[j], y_tr[j])
                         for i, j in splits]) for a in alphas]
      alpha = float(alphas[int(np.argmax(scores))])
      acc = _classifier(alpha, seed).fit(x_tr, y_tr).score(x_te, y_te)
      out[name] = (float(acc), alpha)
  return out
