"""invariance.audit: per-example invariance over every element, flip rates, the Jensen gap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariance import audit
from invariance import encoders
from invariance import groups as groups_lib

T = groups_lib.Translations(8, 8)
X = np.asarray(jax.random.uniform(jax.random.key(0), (12, 8, 8, 1)))


@pytest.fixture(scope="module")
def cnns():
  out = {}
  for name, net in (("gap", encoders.CircularCNN((4, 4))), ("flat", encoders.FlatCNN((4, 4)))):
    params = jax.jit(net.init)(jax.random.key(1), X[:1])     # one program, not one per op
    out[name] = jax.jit(lambda x, net=net, params=params: net.apply(params, x))
  return out


def test_circular_cnn_passes_over_every_shift_and_the_flat_control_fails(cnns):
  elements = audit.eval_elements(T, 0, seed=0)
  assert len(elements) == 64 and elements[0] == 0
  hard = audit.audit(cnns["gap"], X, T, elements, batch=8)
  assert hard["max_error_max"] <= 1e-5 and hard["flip_rate"] == 0.0
  assert hard["elements"] == 64 and hard["examples"] == 12
  control = audit.audit(cnns["flat"], X, T, elements, batch=8)
  assert control["max_error_max"] > 1e-2 and control["flip_rate"] > 0.0


def test_one_non_invariant_example_is_caught_per_example_but_diluted_in_the_batch_ratio():
  """The batch-level Frobenius ratio averages one bad example away; the per-example maximum does not."""
  def fn(x):
    flat = x.reshape(x.shape[0], -1)
    invariant = jnp.stack([flat.sum(-1), (flat ** 2).sum(-1)], -1) * 10.0
    # example 0 alone also sees where its mass is: not shift-invariant
    leak = jnp.zeros_like(invariant).at[0, 0].set(flat[0, :8].sum())
    return invariant + leak
  out = audit.audit(fn, X, T, audit.eval_elements(T, 0, 0), batch=12)
  per_example_worst = out["max_error_max"]
  assert per_example_worst > 3 * out["batch_error"]             # diluted in the batch ratio
  assert out["max_error_mean"] < per_example_worst / 5          # one example out of 12


def test_inside_outside_split_and_identity_first():
  elements = np.arange(64)
  inside = elements < 32                                        # rows 0..3: "the support"
  fn = lambda x: x.reshape(x.shape[0], -1)[:, :4] + 1.0         # depends on the top-left pixels
  out = audit.audit(fn, X, T, elements, batch=12, inside=inside)
  assert set(out) >= {"inside_support", "outside_support"}
  assert out["inside_support"]["max_error_max"] > 0.0
  with pytest.raises(ValueError, match="identity"):
    audit.audit(fn, X, T, [3, 0])


def test_support_flip_rates_against_a_hand_worked_case():
  """Logits (left pixel, right pixel) under the flip group: the flip swaps them, so every
  example's prediction flips under element 1. Every flip rate leaves the identity out (it compares
  the logits with themselves): overall and with both elements "inside" the rate is 1 (the one
  non-identity element, every example), not 1/2."""
  flips = groups_lib.Flips()
  fn = lambda x: jnp.stack([x[:, 0, 0, 0], x[:, 0, -1, 0]], axis=1)
  out = audit.audit(fn, X, flips, [0, 1], batch=12, inside=np.array([True, True]))
  assert out["inside_support"]["flip_rate"] == 1.0
  assert out["flip_rate"] == 1.0
  assert "outside_support" not in out
  alone = audit.audit(fn, X, flips, [0], batch=12)             # only the identity: nothing moves
  assert alone["flip_rate"] == 0.0 and alone["max_error_max"] == 0.0


def test_jensen_gap_sanity_and_its_size():
  mlp = encoders.MLP((8,))
  params = jax.jit(mlp.init)(jax.random.key(2), X[:1])
  labels = np.arange(12) % 10
  out = audit.jensen_gaps(mlp, params, X, labels, T, batch=8, batches=2)
  assert out["examples"] == 12 and out["batches"] == 2
  assert out["violations"] == 0 and out["mean_gap"] >= 0.0


def test_jensen_violations_and_gap_against_a_hand_worked_case(monkeypatch):
  """The counting on given per-example losses: orbit above augmented by 1e-3 and 1e-4 (two
  violations), below by 1e-3 and 0.2 (none); mean gap (aug - orbit) = (1e-3 - 1e-3 - 1e-4 + 0.2)
  / 4. Jensen makes real violations impossible, so this is where the counter can be seen to work."""
  orbit_loss = np.array([1.0, 2.0, 3.0, 0.5])
  aug_loss = np.array([1.001, 1.999, 2.9999, 0.7])
  monkeypatch.setattr(audit, "_jensen", lambda *args: (orbit_loss, aug_loss))
  out = audit.jensen_gaps(None, None, X[:4], np.zeros(4, int), T, batch=4, batches=1)
  assert out["violations"] == 2 and out["examples"] == 4
  np.testing.assert_allclose(out["mean_gap"], (1e-3 - 1e-3 - 1e-4 + 0.2) / 4, rtol=1e-9)


def test_shift_cyclic_and_edge_repeating():
  x = np.arange(16.0).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(audit.shift(x, 1, 0, True)[0, :, 0, 0], [12, 0, 4, 8])
  np.testing.assert_array_equal(audit.shift(x, 1, 0, False)[0, :, 0, 0], [0, 0, 4, 8])
  np.testing.assert_array_equal(audit.shift(x, 0, -2, False)[0, 0, :, 0], [2, 3, 3, 3])
  np.testing.assert_array_equal(audit.shift(x, 0, 0, False), x)


def test_audit_transforms_tells_a_cyclic_invariant_from_an_edge_shift():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(10, 8, 8, 1)).astype(np.float32)
  mean = lambda b: np.stack([b.mean((1, 2, 3)), -b.mean((1, 2, 3))], 1)  # noqa: E731
  out = audit.audit_transforms(mean, x, {
      "cyclic": lambda b: audit.shift(b, 2, 3, True), "edge": lambda b: audit.shift(b, 2, 3, False)},
      batch=4)
  assert out["cyclic"]["error_max"] < 1e-5 and out["cyclic"]["flip_rate"] == 0
  assert out["edge"]["error_mean"] > 0.05              # the control: the same check rejects it
