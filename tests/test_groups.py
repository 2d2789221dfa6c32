"""Group axioms for every group, checked over every pair of elements."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariance import groups as G

GROUPS = [G.Translations(4, 5), G.Rotations(), G.Flips(), G.Dihedral()]


def _x(group):
  hw = (4, 5) if isinstance(group, G.Translations) else (5, 5)
  return jax.random.normal(jax.random.key(0), (2,) + hw + (3,))


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_composition_matches_action(group):
  x = _x(group)
  orbit = group.orbit(x)
  table = group.compose_table()
  for g in range(group.order):
    gx = jax.vmap(lambda y: group.act(g, y))(orbit)   # act(g, act(h, x)) for all h at once
    want = orbit[table[g]]                            # act(g o h, x)
    chex.assert_trees_all_close(gx, want)
    chex.assert_trees_all_equal(np.asarray(group.compose(g, jnp.arange(group.order))), table[g])


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_identity_inverse_and_orbit_size(group):
  x = _x(group)
  chex.assert_trees_all_equal(group.act(group.identity, x), x)
  inv = np.asarray(group.inverse(group.elements()))
  for g in range(group.order):
    chex.assert_trees_all_close(group.act(int(inv[g]), group.act(g, x)), x)
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
  t = G.Translations(6, 8)
  x = jax.random.normal(jax.random.key(1), (1, 6, 8, 1))
  chex.assert_trees_all_equal(t.act(int(t.element(2, 3)), x), jnp.roll(x, (2, 3), axis=(1, 2)))
  support = t.support_from_ranges((3, 6), (0, 8))          # bottom half shifts
  draws = np.asarray(t.sample(jax.random.key(0), 2000, support))
  assert set(draws.tolist()) == set(support.tolist())      # every support element, nothing else
  dy, _ = t.shift(draws)
  assert np.all(np.asarray(dy) >= 3)


@pytest.mark.parametrize("bad", [np.array([-1]), np.array([36]), np.array([], np.int32),
                                 np.array([0.5])])
def test_bad_support_rejected(bad):
  with pytest.raises(ValueError, match="support"):
    G.Translations(6, 6).sample(jax.random.key(0), 3, bad)


def test_bad_inputs_rejected():
  with pytest.raises(ValueError, match="group='shear'"):
    G.make_group("shear", 8, 8)
  with pytest.raises(ValueError, match="square"):
    G.make_group("rotations", 8, 6)
  with pytest.raises(ValueError, match="6x6"):
    G.Translations(6, 6).act(1, jnp.zeros((1, 5, 6, 1)))
  with pytest.raises(ValueError, match="outside"):
    G.Rotations().act(4, jnp.zeros((1, 5, 5, 1)))
