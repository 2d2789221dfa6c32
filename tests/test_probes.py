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
