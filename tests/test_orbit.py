"""The orbit model: exact invariance (with a control), Jensen, sampled -> full, fast == naive."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import augment
from invariance import encoders as E
from invariance import groups as G
from invariance import orbit as O
from invariance.testing import assert_invariant

HW = 8
T = G.Translations(HW, HW)
X = jax.random.normal(jax.random.key(0), (6, HW, HW, 1))
Y = jnp.arange(6) % 4
MLP = E.MLP((16, 12), num_classes=4)
PARAMS = MLP.init(jax.random.key(1), X)


class OrbitModelTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_full_and_fast_orbit_models_are_exactly_invariant(self):
    for mode in ("full", "fast"):
      om = O.OrbitModel(MLP, T, mode=mode)
      assert_invariant(self.variant(lambda x: om.apply(PARAMS, x)), T, X, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_control_plain_mlp_and_one_sample_orbit_are_not_invariant(self):
    with self.assertRaisesRegex(AssertionError, "not invariant"):
      assert_invariant(self.variant(lambda x: MLP.apply(PARAMS, x)), T, X, rtol=1e-5)
    sampled = O.OrbitModel(MLP, T, mode="sampled", num_samples=4)
    with self.assertRaisesRegex(AssertionError, "not invariant"):
      assert_invariant(self.variant(lambda x: sampled.apply(PARAMS, x, jax.random.key(5))), T, X)

  def test_orbit_model_of_a_group_cnn_under_dihedral(self):
    # A rotation-only p4 net becomes D4-invariant once averaged over the D4 orbit.
    p4 = E.GroupCNN("rotations", (4,), num_classes=4)
    params = p4.init(jax.random.key(2), X)
    om = O.OrbitModel(p4, G.Dihedral(), mode="full")
    assert_invariant(jax.jit(lambda x: om.apply(params, x)), G.Dihedral(), X)
    with pytest.raises(AssertionError, match="not invariant"):
      assert_invariant(jax.jit(lambda x: p4.apply(params, x)), G.Dihedral(), X)

  def test_invariance_survives_training(self):
    om = O.OrbitModel(MLP, T, mode="fast")
    opt = optax.adam(1e-2)
    params, state = PARAMS, opt.init(PARAMS)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(om.apply(p, X), Y).mean()
    @jax.jit
    def step(params, state):
      updates, state = opt.update(jax.grad(loss)(params), state)
      return optax.apply_updates(params, updates), state

    for _ in range(3):
      params, state = step(params, state)
    assert_invariant(jax.jit(lambda x: om.apply(params, x)), T, X)


def test_fast_path_equals_naive_values_and_gradients():
  naive = O.OrbitModel(MLP, T, mode="full")
  fast = O.OrbitModel(MLP, T, mode="fast")
  loss = lambda om: lambda p: optax.softmax_cross_entropy_with_integer_labels(
      om.apply(p, X), Y).mean()
  chex.assert_trees_all_close(fast.apply(PARAMS, X), naive.apply(PARAMS, X), atol=1e-5, rtol=1e-5)
  g_fast = jax.jit(jax.grad(loss(fast)))(PARAMS)
  g_naive = jax.jit(jax.grad(loss(naive)))(PARAMS)
  chex.assert_trees_all_close(g_fast, g_naive, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_jensen_orbit_loss_below_augmented_loss(seed):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = 3.0 * jax.random.normal(k1, (16, HW, HW, 1))
  y = jax.random.randint(k2, (16,), 0, 4)
  params = MLP.init(jax.random.key(seed + 10), x)
  orbit_loss, aug_loss = O.jensen_gap(MLP, params, x, y, T)
  assert np.all(np.asarray(orbit_loss) <= np.asarray(aug_loss) + 1e-6)
  assert float(jnp.mean(aug_loss - orbit_loss)) > 0        # strictly positive on generic data
  # The orbit loss is the loss of the orbit model itself.
  direct = optax.softmax_cross_entropy_with_integer_labels(
      O.OrbitModel(MLP, T).apply(params, x), y)
  chex.assert_trees_all_close(orbit_loss, direct, atol=1e-5, rtol=1e-5)


def test_sampled_orbit_average_approaches_full_orbit():
  full = O.orbit_features(MLP, PARAMS, X, T)
  f = jax.jit(lambda k: O.sampled_orbit_features(MLP, PARAMS, X, T, k, 8))
  keys = jax.random.split(jax.random.key(0), 400)
  draws = jax.lax.map(f, keys)                                  # 400 independent estimates
  err = lambda n: float(jnp.linalg.norm(draws[:n].mean(0) - full) / jnp.linalg.norm(full))
  # Unbiased: the error of the mean shrinks like 1/sqrt(draws) (10x for 100x the draws).
  assert err(400) < 0.05
  assert err(400) < 0.3 * err(4)


def test_sampled_orbit_respects_support():
  support = T.support_from_ranges((0, 1), (0, 1))              # only the identity
  om = O.OrbitModel(MLP, T, mode="sampled", num_samples=3, support=support)
  chex.assert_trees_all_close(om.apply(PARAMS, X, jax.random.key(0)), MLP.apply(PARAMS, X),
                              atol=1e-6)


def test_augment_lands_on_support():
  support = T.support_from_ranges((4, 8), (0, 8))               # bottom half positions
  current = T.element(jnp.array([0, 5, 7]), jnp.array([0, 2, 6]))
  g = augment.random_elements(jax.random.key(0), T, 3, support, current)
  landed = np.asarray(T.compose(g, current))
  assert np.isin(landed, support).all()
  x, g2 = augment.augment(jax.random.key(0), X[:3], T, support, current)
  chex.assert_trees_all_close(x, T.act(g2, X[:3]))


def test_bad_orbit_config_rejected():
  with pytest.raises(ValueError, match="orbit_samples=65"):
    O.check_num_samples(65, T)
  with pytest.raises(ValueError, match="mode='bogus'"):
    O.OrbitModel(MLP, T, mode="bogus")
  with pytest.raises(ValueError, match="fast"):
    O.OrbitModel(E.CircularCNN(), T, mode="fast")


def test_fast_path_equals_naive_on_a_full_canvas_with_several_chunks():
  """24x24 (|G| = 576) with 6 images runs the chunked fast path (several image chunks)."""
  t24 = G.Translations(24, 24)
  x = jax.random.normal(jax.random.key(7), (6, 24, 24, 1))
  y = jnp.arange(6) % 4
  params = MLP.init(jax.random.key(8), x)
  loss = lambda om: lambda p, x: optax.softmax_cross_entropy_with_integer_labels(
      om.apply(p, x), y).mean()
  fast, naive = O.OrbitModel(MLP, t24, mode="fast"), O.OrbitModel(MLP, t24, mode="full")
  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  g_naive = jax.jit(jax.grad(loss(naive), argnums=(0, 1)))(params, x)
  chex.assert_trees_all_close(g_fast, g_naive, atol=1e-5, rtol=1e-5)
