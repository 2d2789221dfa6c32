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


def test_masked_accuracy_is_the_accuracy_of_the_masked_rows_only():
  """Against numpy on random logits, where masked-out rows are right and wrong alike."""
  rng = np.random.default_rng(0)
  logits, labels, mask = rng.normal(size=(50, 4)), rng.integers(0, 4, 50), rng.integers(0, 2, 50)
  correct = logits.argmax(1) == labels
  assert correct[mask == 0].any() and not correct[mask == 0].all()
  got = metrics.accuracy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_allclose(float(got), correct[mask == 1].mean(), rtol=1e-6)


def test_relative_change_against_a_hand_worked_case():
  """ref = (3, 4), norm 5: an unchanged copy is 0, a zero output and a doubled one are 5 / 5 = 1,
  (3, 0) is 4 / 5; numpy and jax inputs alike."""
  outs = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [3.0, 0.0]])
  ref = np.array([3.0, 4.0])
  np.testing.assert_allclose(metrics.relative_change(outs, ref), [0.0, 1.0, 1.0, 0.8])
  np.testing.assert_allclose(metrics.relative_change(jnp.asarray(outs), jnp.asarray(ref)),
                             [0.0, 1.0, 1.0, 0.8], rtol=1e-6)
