"""The orbit model: exact invariance, loss of averaged logits, unbiased sampling, fast == naive."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import augment
from invariance import encoders
from invariance import groups as groups_lib
from invariance import orbit
from invariance.testing import assert_invariant, assert_uniform_draws

HW = 8
T = groups_lib.Translations(HW, HW)
X = jax.random.normal(jax.random.key(0), (6, HW, HW, 1))
Y = jnp.arange(6) % 4
MLP = encoders.MLP((16, 12), num_classes=4)
PARAMS = jax.jit(MLP.init)(jax.random.key(1), X)          # one program, not one per op


class OrbitModelTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_full_and_fast_orbit_models_are_exactly_invariant(self):
    for mode in ("full", "fast"):
      om = orbit.OrbitModel(MLP, T, mode=mode)
      assert_invariant(self.variant(lambda x: om.apply(PARAMS, x)), T, X, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_control_plain_mlp_and_one_sample_orbit_are_not_invariant(self):
    with self.assertRaisesRegex(AssertionError, "not invariant"):
      assert_invariant(self.variant(lambda x: MLP.apply(PARAMS, x)), T, X, rtol=1e-5)
    sampled = orbit.OrbitModel(MLP, T, mode="sampled", num_samples=4)
    with self.assertRaisesRegex(AssertionError, "not invariant"):
      assert_invariant(self.variant(lambda x: sampled.apply(PARAMS, x, jax.random.key(5))), T, X)

  def test_orbit_model_of_a_group_cnn_under_dihedral(self):
    # A rotation-only p4 net becomes D4-invariant once averaged over the D4 orbit.
    p4 = encoders.GroupCNN("rotations", (4,), num_classes=4)
    params = jax.jit(p4.init)(jax.random.key(2), X)
    om = orbit.OrbitModel(p4, groups_lib.Dihedral(), mode="full")
    assert_invariant(jax.jit(lambda x: om.apply(params, x)), groups_lib.Dihedral(), X)
    with pytest.raises(AssertionError, match="not invariant"):
      assert_invariant(jax.jit(lambda x: p4.apply(params, x)), groups_lib.Dihedral(), X)

  def test_invariance_survives_training(self):
    om = orbit.OrbitModel(MLP, T, mode="fast")
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
  naive = orbit.OrbitModel(MLP, T, mode="full")
  fast = orbit.OrbitModel(MLP, T, mode="fast")
  loss = lambda om: lambda p: optax.softmax_cross_entropy_with_integer_labels(
      om.apply(p, X), Y).mean()
  chex.assert_trees_all_close(fast.apply(PARAMS, X), naive.apply(PARAMS, X), atol=1e-5, rtol=1e-5)
  g_fast = jax.jit(jax.grad(loss(fast)))(PARAMS)
  g_naive = jax.jit(jax.grad(loss(naive)))(PARAMS)
  chex.assert_trees_all_close(g_fast, g_naive, atol=1e-5, rtol=1e-5)


class SquaredHeadMLP(encoders.MLP):
  """Control: the same MLP with a nonlinear head (its logits squared)."""

  def classify(self, features):
    return jnp.square(self.head(features))


def _assert_orbit_loss_is_ce_of_averaged_logits(model, params, mode):
  """The orbit model's loss == CE(mean over G of the plain model's logits on g.x) per example
  (jensen_gap's first output), which holds when the head is linear in the features."""
  direct = optax.softmax_cross_entropy_with_integer_labels(
      orbit.OrbitModel(model, T, mode=mode).apply(params, X), Y)
  orbit_loss, aug_loss = orbit.jensen_gap(model, params, X, Y, T)
  chex.assert_trees_all_close(orbit_loss, direct, atol=1e-5, rtol=1e-5)
  return orbit_loss, aug_loss


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_orbit_loss_is_cross_entropy_of_averaged_logits(mode):
  orbit_loss, aug_loss = _assert_orbit_loss_is_ce_of_averaged_logits(MLP, PARAMS, mode)
  # SANITY CHECK, not a finding: Jensen (orbit loss <= mean augmented loss) holds for ANY logits
  # because cross-entropy is convex, so this line cannot fail; it only guards the float arithmetic.
  assert np.all(np.asarray(orbit_loss) <= np.asarray(aug_loss) + 1e-6)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_control_nonlinear_head_breaks_averaged_logits(mode):
  # Averaging features then squaring the logits is not averaging the squared logits: rejected.
  with pytest.raises(AssertionError, match="Values not approximately equal"):
    _assert_orbit_loss_is_ce_of_averaged_logits(SquaredHeadMLP((16, 12), num_classes=4), PARAMS,
                                                mode)


K, DRAWS = 8, 1000        # 8 elements per example, 6 examples, 1000 independent calls


def _sampler_draws(support=None):
  keys = jax.random.split(jax.random.key(0), DRAWS)
  return jax.vmap(lambda k: orbit.sample_elements(T, k, K, X.shape[0], support))(keys)   # M, K, N


def test_sampled_orbit_elements_are_uniform():
  """Unbiasedness, part 1: every draw (slot k, example n) of the sampled orbit is uniform on G
  (48 000 counts, slot by slot, against uniform), and uniform on a support when one is given."""
  assert_uniform_draws(_sampler_draws(), T.elements())
  support = T.support_from_ranges((4, 8), (0, 8))
  assert_uniform_draws(_sampler_draws(support), support)


def test_control_biased_orbit_sampler_is_rejected():
  # A sampled orbit that never draws 4 of the 64 shifts: the same count test rejects it.
  with pytest.raises(AssertionError, match="not uniform"):
    assert_uniform_draws(_sampler_draws(support=np.arange(4, 64)), T.elements())


@jax.jit
def _sampled_and_averaged_features(elements_KN, key):
  """The sampled orbit's features, and the mean of phi(g_k . x) over the given elements."""
  want = jnp.stack([MLP.apply(PARAMS, T.act(g_N, X), method=MLP.embed) for g_N in elements_KN])
  return orbit.sampled_orbit_features(MLP, PARAMS, X, T, key, K), want.mean(0)


_sample_elements = jax.jit(lambda key: orbit.sample_elements(T, key, K, X.shape[0]))


def _assert_sampled_features_average(elements_KN, key):
  got, want = _sampled_and_averaged_features(elements_KN, key)
  chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)


def test_sampled_orbit_features_average_the_sampled_elements():
  """Unbiasedness, part 2: the estimate is exactly mean_k phi(g_k . x) over sample_elements'
  draws, so with uniform draws its expectation is the full orbit mean. Control: another key's
  elements give another estimate, which the same assertion rejects."""
  key = jax.random.key(3)
  _assert_sampled_features_average(_sample_elements(key), key)
  with pytest.raises(AssertionError, match="Values not approximately equal"):
    _assert_sampled_features_average(_sample_elements(jax.random.key(4)), key)


def test_sampled_orbit_respects_support():
  support = T.support_from_ranges((0, 1), (0, 1))              # only the identity
  om = orbit.OrbitModel(MLP, T, mode="sampled", num_samples=3, support=support)
  sampled, plain = jax.jit(lambda p, k: (om.apply(p, X, k), MLP.apply(p, X)))(PARAMS,
                                                                             jax.random.key(0))
  chex.assert_trees_all_close(sampled, plain, atol=1e-6)


def test_augment_lands_on_support():
  support = T.support_from_ranges((4, 8), (0, 8))               # bottom half positions
  current = T.element(jnp.array([0, 5, 7]), jnp.array([0, 2, 6]))
  @jax.jit
  def draw(key, current):
    g = augment.random_elements(key, T, 3, support, current)
    x, g2 = augment.augment(key, X[:3], T, support, current)
    return T.compose(g, current), x, T.act(g2, X[:3])

  landed, x, acted = draw(jax.random.key(0), current)
  assert np.isin(np.asarray(landed), support).all()
  chex.assert_trees_all_close(x, acted)


def test_bad_orbit_config_rejected():
  with pytest.raises(ValueError, match="mode='bogus'"):
    orbit.OrbitModel(MLP, T, mode="bogus")
  with pytest.raises(ValueError, match="fast"):
    orbit.OrbitModel(encoders.CircularCNN((4,)), T, mode="fast")


def test_fast_path_equals_naive_on_a_full_canvas_with_several_chunks():
  """24x24 (|G| = 576) with 6 images runs the chunked fast path (several image chunks)."""
  t24 = groups_lib.Translations(24, 24)
  x = jax.random.normal(jax.random.key(7), (6, 24, 24, 1))
  y = jnp.arange(6) % 4
  params = jax.jit(MLP.init)(jax.random.key(8), x)
  loss = lambda om: lambda p, x: optax.softmax_cross_entropy_with_integer_labels(
      om.apply(p, x), y).mean()
  fast, naive = orbit.OrbitModel(MLP, t24, mode="fast"), orbit.OrbitModel(MLP, t24, mode="full")
  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  g_naive = jax.jit(jax.grad(loss(naive), argnums=(0, 1)))(params, x)
  chex.assert_trees_all_close(g_fast, g_naive, atol=1e-5, rtol=1e-5)
