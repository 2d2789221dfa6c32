"""Linear probes: decode a planted linear signal; shuffled labels (the control) stay at chance."""
import numpy as np
import pytest

from invariance import probes

RNG = np.random.default_rng(0)
X_TRAIN, X_TEST = RNG.normal(size=(400, 20)), RNG.normal(size=(2000, 20))
W = RNG.normal(size=(20, 3))


def _labels(x, w=W):
  return np.argmax(x @ w, axis=1).astype(np.int32)


def test_probe_decodes_a_planted_linear_signal():
  acc = probes.linear_probe(X_TRAIN, _labels(X_TRAIN), X_TEST, _labels(X_TEST))
  assert acc > 0.9


def test_shuffled_labels_are_at_chance():
  y_train = RNG.permutation(_labels(X_TRAIN))
  y_test = _labels(X_TEST)
  acc = probes.linear_probe(X_TRAIN, y_train, X_TEST, y_test)
  assert abs(acc - probes.chance(y_test)) < 0.08 or acc < probes.chance(y_test)


def test_linear_probe_flattens_image_shaped_features():
  x_tr, x_te = X_TRAIN.reshape(400, 2, 2, 5), X_TEST.reshape(2000, 2, 2, 5)
  signal = lambda x: (x[:, 0] > 0).astype(np.int32)
  noise_tr, noise_te = RNG.integers(0, 2, 400), RNG.integers(0, 2, 2000)
  assert probes.linear_probe(x_tr, signal(X_TRAIN), x_te, signal(X_TEST)) > 0.95
  assert probes.linear_probe(x_tr, noise_tr, x_te, noise_te) < 0.6


def test_single_class_and_bad_shapes():
  y = np.zeros(400, np.int32)
  assert probes.linear_probe(X_TRAIN, y, X_TEST, np.zeros(2000, np.int32)) == 1.0
  with pytest.raises(ValueError, match="features"):
    probes.linear_probe(X_TRAIN, y, X_TEST[:, :5], np.zeros(2000, np.int32))
  with pytest.raises(ValueError, match="labels_train"):
    probes.linear_probe(X_TRAIN, y[:10], X_TEST, np.zeros(2000, np.int32))


def test_ridge_probes_read_what_is_there_and_choose_their_regularisation():
  """Informative features are read (car 4 classes, light 2) and choose a smaller ridge alpha than
  pure noise does; shuffled labels (the control) stay at chance."""
  rng = np.random.default_rng(0)
  n, d = 600, 300
  attrs = {"car": rng.integers(0, 4, 2 * n), "light": rng.integers(0, 2, 2 * n)}
  x = rng.normal(size=(2 * n, d))
  x[:, :4] += 4.0 * np.eye(4)[attrs["car"]]
  x[:, 4] += 4.0 * attrs["light"]
  split = lambda a: ({k: v[:n] for k, v in a.items()}, {k: v[n:] for k, v in a.items()})
  (tr, te) = split(attrs)
  got = probes.ridge_probes(x[:n], tr, x[n:], te)
  assert got["car"][0] > 0.8 and got["light"][0] > 0.8
  assert len(got["car"][1]) == 4 and len(got["light"][1]) == 2
  noise = probes.ridge_probes(rng.normal(size=(n, d)), tr, x[n:], te)
  assert max(got["light"][1]) < max(noise["light"][1])
  shuffled = {k: rng.permutation(v) for k, v in tr.items()}
  control = probes.ridge_probes(x[:n], shuffled, x[n:], te)
  assert control["car"][0] < 0.4 and control["light"][0] < 0.6
  with pytest.raises(ValueError, match="attributes"):
    probes.ridge_probes(x[:n], tr, x[n:], {"car": te["car"]})


def test_label_curve_draws_caps_and_reads_a_planted_signal():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300)
  x = rng.normal(size=(300, 20))
  x[:, 3] += 4.0 * (2 * y - 1)                        # one feature carries the label
  curve = probes.label_curve(x[:200], y[:200], x[200:], y[200:], (8, 64, 10_000), (0, 1, 2))
  assert sorted(curve) == [8, 64, 200]                 # 10,000 capped at the 200 training rows
  assert all(len(v) == 3 for v in curve.values())
  assert min(curve[64]) > 0.95 and min(curve[200]) > 0.95
  assert len(set(curve[200])) == 1                     # all labels: every draw is the same set
  control = probes.label_curve(x[:200], rng.permutation(y[:200]), x[200:], y[200:], (200,), (0,))
  assert control[200][0] < 0.7                         # shuffled labels: no signal to read


def test_ridge_classifier_scores_match_a_direct_ridge_fit():
  from sklearn.linear_model import RidgeClassifierCV
  from sklearn.preprocessing import StandardScaler
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
  scores = probes.ridge_classifier(x, y)(x[:7])
  scaler = StandardScaler().fit(x)
  direct = RidgeClassifierCV(alphas=probes.RIDGE_ALPHAS).fit(scaler.transform(x), y)
  np.testing.assert_allclose(scores, direct.decision_function(scaler.transform(x[:7])), rtol=1e-10)
  two = probes.ridge_classifier(x, (y > 0).astype(int))(x[:4])
  assert two.shape == (4, 2) and np.allclose(two[:, 0], -two[:, 1])
  with pytest.raises(ValueError, match="one class"):
    probes.ridge_classifier(x, np.zeros(60, int))


def _direct_loo_alpha(x, y, alphas):
  """float64: for each alpha, refit a ridge (unpenalised intercept) on all rows but one, n times,
  and sum the squared error on the row left out; the alpha of the least error."""
  n = len(x)
  xa = np.hstack([x, np.ones((n, 1))])
  errors = []
  for alpha in alphas:
    penalty = alpha * np.diag(np.r_[np.ones(x.shape[1]), 0.0])
    err = 0.0
    for i in range(n):
      keep = np.arange(n) != i
      w = np.linalg.solve(xa[keep].T @ xa[keep] + penalty, xa[keep].T @ y[keep])
      err += (y[i] - xa[i] @ w) ** 2
    errors.append(err)
  return alphas[int(np.argmin(errors))], errors


def test_ridge_probes_choose_the_alpha_a_direct_leave_one_out_computation_chooses():
  """The chosen alpha per class indicator equals the one leave-one-out refits choose (on the
  standardised training features, as the probe sees them); the signal strengths differ per
  class, so the choices differ too (the check is not one alpha everywhere)."""
  from sklearn.preprocessing import StandardScaler
  rng = np.random.default_rng(3)
  n, d = 48, 12
  y = rng.integers(0, 3, n)
  x = rng.normal(size=(n, d))
  x[:, 0] += 3.0 * (y == 0)                                # class 0: strong signal
  x[:, 1] += 0.4 * (y == 1)                                # class 1: weak
  alphas = (0.1, 3.0, 30.0, 300.0, 3000.0)
  (_, chosen), = probes.ridge_probes(x, {"y": y}, x[:5], {"y": y[:5]}, alphas=alphas).values()
  xs = StandardScaler().fit_transform(x)
  direct = [_direct_loo_alpha(xs, np.where(y == c, 1.0, -1.0), alphas)[0] for c in range(3)]
  assert list(chosen) == direct
  assert len(set(direct)) > 1


def test_label_curve_draws_a_different_subset_per_seed():
  """With a weak signal, probes fit on 12 labels of five different draws reach different
  accuracies; a curve that reused the same 12 examples would give one number five times."""
  rng = np.random.default_rng(4)
  y = rng.integers(0, 2, 200)
  x = rng.normal(size=(200, 10))
  x[:, 0] += 0.8 * (2 * y - 1)
  curve = probes.label_curve(x[:150], y[:150], x[150:], y[150:], (12,), (0, 1, 2, 3, 4))
  assert len(set(curve[12])) > 1
