"""cross_entropy against a float64 numpy computation: plain mean, masked mean, empty mask."""
import jax.numpy as jnp
import numpy as np

from invariance import losses

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 4)) * 3
LABELS = np.array([0, 3, 1, 1, 2, 0])


def _np_ce(logits, labels):
  shifted = logits - logits.max(1, keepdims=True)
  return np.log(np.exp(shifted).sum(1)) - shifted[np.arange(len(labels)), labels]


def test_cross_entropy_is_the_mean_negative_log_softmax_at_the_label():
  got = losses.cross_entropy(jnp.float32(LOGITS), jnp.asarray(LABELS))
  np.testing.assert_allclose(got, _np_ce(LOGITS, LABELS).mean(), rtol=1e-6)


def test_masked_cross_entropy_averages_over_the_masked_rows_only():
  mask = np.array([1, 0, 1, 1, 0, 0])
  got = losses.cross_entropy(jnp.float32(LOGITS), jnp.asarray(LABELS), jnp.asarray(mask))
  np.testing.assert_allclose(got, _np_ce(LOGITS, LABELS)[mask == 1].mean(), rtol=1e-6)
  # control: the mean over all rows is another number here
  assert abs(_np_ce(LOGITS, LABELS)[mask == 1].mean() - _np_ce(LOGITS, LABELS).mean()) > 1e-2
  empty = losses.cross_entropy(jnp.float32(LOGITS), jnp.asarray(LABELS), jnp.zeros(6))
  assert float(empty) == 0.0
