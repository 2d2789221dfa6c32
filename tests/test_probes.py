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


def test_probe_all_per_attribute_and_image_shaped_features():
  x_tr, x_te = X_TRAIN.reshape(400, 2, 2, 5), X_TEST.reshape(2000, 2, 2, 5)
  signal = lambda x: (x[:, 0] > 0).astype(np.int32)
  noise_tr, noise_te = RNG.integers(0, 2, 400), RNG.integers(0, 2, 2000)
  got = probes.probe_all(x_tr, {"signal": signal(X_TRAIN), "noise": noise_tr},
                         x_te, {"signal": signal(X_TEST), "noise": noise_te})
  assert set(got) == {"signal", "noise"}
  assert got["signal"] > 0.95 and got["noise"] < 0.6


def test_single_class_and_bad_shapes():
  y = np.zeros(400, np.int32)
  assert probes.linear_probe(X_TRAIN, y, X_TEST, np.zeros(2000, np.int32)) == 1.0
  with pytest.raises(ValueError, match="features"):
    probes.linear_probe(X_TRAIN, y, X_TEST[:, :5], np.zeros(2000, np.int32))
  with pytest.raises(ValueError, match="labels_train"):
    probes.linear_probe(X_TRAIN, y[:10], X_TEST, np.zeros(2000, np.int32))
  with pytest.raises(ValueError, match="attributes"):
    probes.probe_all(X_TRAIN, {"a": y}, X_TEST, {"b": np.zeros(2000, np.int32)})


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
