"""Group axioms for every group, checked over every pair of elements."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariance import groups as groups_lib
from invariance.testing import assert_composition_matches_action, assert_uniform_draws

GROUPS = [groups_lib.Translations(4, 5), groups_lib.Rotations(), groups_lib.Flips(), groups_lib.Dihedral()]


def _x(group):
  hw = (4, 5) if isinstance(group, groups_lib.Translations) else (5, 5)
  return jax.random.normal(jax.random.key(0), (2,) + hw + (3,))


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_composition_matches_action(group):
  """compose and the Cayley table against the action itself: act(g o h, x) == act(g, act(h, x))
  for every pair, on an asymmetric input (the controls below show the same check rejects wrong
  tables)."""
  x = _x(group)
  assert_composition_matches_action(group, x)
  table = group.compose_table()       # Translations computes compose arithmetically: check both
  assert_composition_matches_action(group, x, compose=lambda g, h: jnp.asarray(table)[g, h])


def _dihedral_without_flip_sign(g, h):
  """The classic D4 slip: rot^r1 flip^s1 rot^r2 = rot^(r1 + r2) flip^s1 (it is r1 - r2)."""
  (s1, r1), (s2, r2) = jnp.divmod(g, 4), jnp.divmod(h, 4)
  return 4 * ((s1 + s2) % 2) + (r1 + r2) % 4


WRONG_COMPOSITIONS = (
    [(grp, "off_by_one", lambda g, h, grp=grp: (grp.compose(g, h) + 1) % grp.order)
     for grp in GROUPS]
    + [(groups_lib.Dihedral(), "reversed_order", lambda g, h: groups_lib.Dihedral().compose(h, g)),
       (groups_lib.Dihedral(), "flip_sign_ignored", _dihedral_without_flip_sign)])


@pytest.mark.parametrize("group,what,wrong", WRONG_COMPOSITIONS,
                         ids=[f"{g.name}-{w}" for g, w, _ in WRONG_COMPOSITIONS])
def test_control_wrong_composition_is_rejected(group, what, wrong):
  with pytest.raises(AssertionError, match="composition disagrees with the action"):
    assert_composition_matches_action(group, _x(group), compose=wrong)


def test_control_symmetric_input_is_refused():
  # A constant image is fixed by every element: any table would "match", so the check refuses it.
  with pytest.raises(ValueError, match="symmetric"):
    assert_composition_matches_action(groups_lib.Dihedral(), jnp.ones((2, 5, 5, 3)))


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_identity_inverse_and_orbit_size(group):
  x = _x(group)
  chex.assert_trees_all_equal(group.act(group.identity, x), x)
  inv = np.asarray(group.inverse(group.elements()))
  # act(inv(g), act(g, x)) for every g, each action the static one (python int), in one program.
  round_trips = jax.jit(lambda x: jnp.stack([group.act(int(inv[g]), group.act(g, x))
                                             for g in range(group.order)]))(x)
  chex.assert_trees_all_close(round_trips, jnp.broadcast_to(x, round_trips.shape))
  orbit = group.orbit(x)
  assert orbit.shape == (group.order,) + x.shape
  # Distinct elements give distinct images of a generic input (the action is faithful).
  flat = np.asarray(orbit[:, 0]).reshape(group.order, -1)
  assert len({row.tobytes() for row in flat.round(6)}) == group.order


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_per_example_action_matches_static(group):
  x = _x(group)
  g = group.sample(jax.random.key(3), x.shape[0])
  want = jnp.concatenate([group.act(int(g[i]), x[i:i + 1]) for i in range(x.shape[0])])
  chex.assert_trees_all_close(jax.jit(group.act)(g, x), want)


def test_translation_element_is_roll_and_support_sampling():
  t = groups_lib.Translations(6, 8)
  x = jax.random.normal(jax.random.key(1), (1, 6, 8, 1))
  chex.assert_trees_all_equal(t.act(int(t.element(2, 3)), x), jnp.roll(x, (2, 3), axis=(1, 2)))
  support = t.support_from_ranges((3, 6), (0, 8))          # bottom half shifts
  draws = np.asarray(t.sample(jax.random.key(0), 2000, support))
  assert set(draws.tolist()) == set(support.tolist())      # every support element, nothing else
  dy, _ = t.shift(draws)
  assert np.all(np.asarray(dy) >= 3)


T8 = groups_lib.Translations(8, 8)                                     # 64 elements
BOTTOM = T8.support_from_ranges((4, 8), (0, 8))              # 32 of them


@pytest.mark.parametrize("support", [None, BOTTOM], ids=["group", "support"])
def test_sample_is_uniform(support):
  """Counts of 64 000 draws (1000 repetitions x 64 slots) against uniform, slot by slot."""
  draws = T8.sample(jax.random.key(0), (1000, 8, 8), support)
  assert_uniform_draws(draws, T8.elements() if support is None else support)


def test_control_biased_sampler_is_rejected():
  # Never draws 4 of the 64 elements: the same count test rejects it.
  draws = T8.sample(jax.random.key(0), (1000, 8, 8), np.arange(4, 64))
  with pytest.raises(AssertionError, match="not uniform"):
    assert_uniform_draws(draws, T8.elements())
  # One slot (the first draw) never leaves the identity, the other 63 are uniform.
  draws = np.array(T8.sample(jax.random.key(0), (1000, 8, 8))).reshape(1000, 64)
  draws[:, 0] = 0
  with pytest.raises(AssertionError, match="not uniform"):
    assert_uniform_draws(draws, T8.elements())
  # The whole group where only the support is allowed.
  with pytest.raises(AssertionError, match="outside the support"):
    assert_uniform_draws(T8.sample(jax.random.key(0), (1000, 8, 8)), BOTTOM)


@pytest.mark.parametrize("bad", [np.array([-1]), np.array([36]), np.array([], np.int32),
                                 np.array([0.5])])
def test_bad_support_rejected(bad):
  with pytest.raises(ValueError, match="support"):
    groups_lib.Translations(6, 6).sample(jax.random.key(0), 3, bad)


def test_bad_inputs_rejected():
  with pytest.raises(ValueError, match="group='shear'"):
    groups_lib.make_group("shear", 8, 8)
  with pytest.raises(ValueError, match="square"):
    groups_lib.make_group("rotations", 8, 6)
  with pytest.raises(ValueError, match="6x6"):
    groups_lib.Translations(6, 6).act(1, jnp.zeros((1, 5, 6, 1)))
  with pytest.raises(ValueError, match="outside"):
    groups_lib.Rotations().act(4, jnp.zeros((1, 5, 5, 1)))
