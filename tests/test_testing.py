"""The invariance assertion itself: it passes invariant functions, catches non-invariant ones in
both modes, catches a model that couples examples only in its per-example mode, and refuses a
constant function (for which no invariance check can fail)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariance import groups as groups_lib
from invariance.testing import assert_invariant

T = groups_lib.Translations(5, 5)
X = np.asarray(jax.random.normal(jax.random.key(0), (6, 5, 5, 2)))


def pooled(x):
  """Invariant per example: every pixel's channels summed, squared, then averaged."""
  return jnp.stack([jnp.mean(jnp.sum(x, -1) ** 2, axis=(1, 2)), jnp.mean(x, axis=(1, 2, 3))], 1)


def coupled(x):
  """Couples each example with the next one: <x_n, x_{n+1}> summed over pixels. The same shift of
  every example keeps each inner product (so the batch-wide check passes); a different shift per
  example changes it."""
  return jnp.sum(x * jnp.roll(x, -1, axis=0), axis=(1, 2, 3))[:, None]


def corner(x):
  return x[:, 0, 0, :]


def test_an_invariant_function_passes_both_modes():
  assert assert_invariant(pooled, T, X) < 1e-5
  assert assert_invariant(pooled, T, X, per_example=True) < 1e-5


def test_a_non_invariant_function_fails_both_modes():
  with pytest.raises(AssertionError, match="not invariant under translations: element"):
    assert_invariant(corner, T, X)
  with pytest.raises(AssertionError, match="per example"):
    assert_invariant(corner, T, X, per_example=True)


def test_a_model_coupling_examples_is_caught_only_per_example():
  assert assert_invariant(coupled, T, X) < 1e-5          # one element for the whole batch
  with pytest.raises(AssertionError, match="per example"):
    assert_invariant(coupled, T, X, per_example=True)


@pytest.mark.parametrize("fn", [lambda x: jnp.ones((x.shape[0], 3)),
                                lambda x: jnp.zeros((x.shape[0], 2)),
                                lambda x: jnp.full((x.shape[0], 1), 7.0) + 0 * jnp.sum(x)])
def test_a_constant_function_is_refused(fn):
  for per_example in (False, True):
    with pytest.raises(ValueError, match="constant function"):
      assert_invariant(fn, T, X, per_example=per_example)


def test_per_example_mode_reaches_elements_beyond_a_subgroup():
  """Invariant to horizontal shifts only (the sum of the top row): the 24 random elements of the
  per-example draws include vertical shifts, which move another row to the top."""
  row = lambda x: x[:, 0].sum(axis=(1, 2))[:, None]
  with pytest.raises(AssertionError):
    assert_invariant(row, T, X, per_example=True)
