import jax
import jax.numpy as jnp
import numpy as np

from invariance import groups as groups_lib
from invariance import metrics

T = groups_lib.Translations(6, 6)
X = jax.random.normal(jax.random.key(0), (5, 6, 6, 1))


def test_accuracy_with_and_without_mask():
  logits = jnp.array([[1., 0.], [0., 1.], [1., 0.]])
  labels = jnp.array([0, 0, 0])
  assert float(metrics.accuracy(logits, labels)) == np.float32(2 / 3)
  assert float(metrics.accuracy(logits, labels, jnp.array([1, 0, 1]))) == 1.0


def test_invariance_error_zero_for_invariant_and_positive_for_control():
  pooled = lambda x: x.sum(axis=(1, 2))                       # invariant to cyclic shifts
  flat = lambda x: x.reshape(x.shape[0], -1)                  # not invariant
  assert float(metrics.invariance_error(pooled, X, T)) < 1e-6
  errs = metrics.invariance_errors(flat, X, T)
  assert errs.shape == (36,) and float(errs[0]) == 0.0 and float(errs[1:].min()) > 0.1
