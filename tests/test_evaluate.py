"""Evaluators, each with a control that shows it can fail: zero-shot needs the right class
embeddings; pool probes use exactly the first n labels. The functions here are numpy (nothing to compile)."""
import numpy as np
import pytest

from invariance import evaluate

RNG = np.random.default_rng(0)


def _split(n, seed):
  """Images (N, 2, 2, 1) whose first pixel's sign is the label ``y``; ``noise`` is unrelated."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(n, 2, 2, 1)).astype(np.float32)
  return images, {"y": (images[:, 0, 0, 0] > 0).astype(np.int32),
                  "noise": rng.integers(0, 2, n).astype(np.int32)}


def _features(images):
  n = len(images)
  flat = images.reshape(n, -1)
  return {"signal": flat, "constant": np.zeros((n, 3), np.float32),
          "shuffled": np.random.default_rng(n).permutation(flat)}   # rows of other examples


def test_batched_apply_pads_to_one_shape_and_cuts_back():
  seen = []
  fn = lambda x: (seen.append(x.shape), {"double": 2 * x, "sum": x.sum(axis=1)})[1]
  x = RNG.normal(size=(7, 3)).astype(np.float32)
  out = evaluate.batched_apply(fn, x, 3)
  assert set(seen) == {(3, 3)} and len(seen) == 3
  np.testing.assert_array_equal(out["double"], 2 * x)
  np.testing.assert_allclose(out["sum"], x.sum(axis=1), rtol=1e-6)


def test_zero_shot_needs_the_right_class_embeddings():
  prototypes = np.eye(4, 8, dtype=np.float32)
  labels = RNG.integers(0, 4, 200)
  images = prototypes[labels] + 0.05 * RNG.normal(size=(200, 8)).astype(np.float32)
  got = evaluate.zero_shot(images, {"right": prototypes, "permuted": np.roll(prototypes, 1, 0)},
                           labels)
  assert got == {"right": 1.0, "permuted": 0.0}


def test_pool_probes_use_exactly_the_first_n_labels():
  pool, test = _split(200, 3), _split(200, 4)
  order = np.argsort(pool[1]["y"], kind="stable")      # class 0 first: the first n are one class
  pool = (pool[0][order], {k: v[order] for k, v in pool[1].items()})
  probes = evaluate.PoolProbes(pool, test, batch=64)
  probes.features("model", _features)
  first_class_only = probes.probe("model", "signal", "y", n=10)
  assert first_class_only == pytest.approx(np.mean(test[1]["y"] == 0))   # predicts class 0
  assert probes.probe("model", "signal", "y") > 0.95                     # every label
  assert probes.probe("model", "shuffled", "y") < 0.65                    # control
  probes.features("classifier", lambda x: {"logits": np.stack([-x[:, 0, 0, 0],
                                                               x[:, 0, 0, 0]], 1)})
  assert probes.accuracy("classifier", "logits", "y") == 1.0
  assert probes.accuracy("classifier", "logits", "noise") < 0.65


def test_pair_sensitivity_is_zero_when_ignored_and_one_for_unrelated_scenes():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(200, 6))
  ignores = evaluate.pair_sensitivity({"f": a}, {"f": a.copy()})
  replaced = evaluate.pair_sensitivity({"f": a}, {"f": rng.normal(size=(200, 6))})
  assert ignores["f"] == 0.0 and 0.9 < replaced["f"] < 1.1


def test_layer_report_separates_a_layer_that_sees_the_attribute_from_one_that_does_not():
  """A two-layer feature function: ``seen`` copies the images (which carry the attribute),
  ``blind`` is a constant plus noise that ignores them (the control)."""
  rng = np.random.default_rng(1)
  def scenes_of(n):
    label = rng.integers(0, 2, n)
    images = rng.normal(size=(n, 4)) + 3.0 * label[:, None]
    return images.astype(np.float32), {"light": label}
  train, test = scenes_of(200), scenes_of(200)
  base = rng.normal(size=(50, 4)).astype(np.float32)
  pairs = {"light": (base, base + 3.0)}
  fn = lambda x: {"seen": x, "blind": np.zeros_like(x) + np.sin(np.arange(x.shape[1]))}
  got = evaluate.layer_report(fn, train, test, pairs, ["seen", "blind"], batch=64)
  assert got["probe"]["seen"]["light"] > 0.9 and got["probe"]["blind"]["light"] < 0.65
  assert got["sensitivity"]["seen"]["light"] > 0.5 and got["sensitivity"]["blind"]["light"] == 0.0
  with pytest.raises(ValueError, match="missing"):
    evaluate.layer_report(fn, train, test, pairs, ["missing"], batch=64)


def test_pair_sensitivity_against_a_hand_worked_case():
  """f(a) = 0, 1, 3 and f(b) = 1, 1, 5: paired distances 1, 0, 2 (mean 1); each a against the
  previous pair's b (5, 1, 1): 5, 0, 2 (mean 7/3); the ratio 3/7."""
  f_a = {"layer": np.array([[0.0], [1.0], [3.0]])}
  f_b = {"layer": np.array([[1.0], [1.0], [5.0]])}
  assert evaluate.pair_sensitivity(f_a, f_b)["layer"] == pytest.approx(3 / 7)
