"""The recovery study's recipes and read-outs, each with a control that shows the check can fail."""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from invariance import dual_encoder as de
from invariance import recovery
from invariance import train
from invariance.data import pipeline

RNG = np.random.default_rng(0)


# -- LP-FT's probe head --------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [2, 3])
def test_probe_head_predicts_what_the_probe_predicts(classes):
  x = RNG.normal(size=(300, 6)) * np.array([1, 10, 0.1, 5, 1, 0]) + np.array([3, -2, 0, 1, 0, 7])
  y = np.argmax(x[:, :classes] * np.array([1, 0.1, 10][:classes]) + RNG.normal(size=(300, classes)),
                axis=1).astype(np.int32)
  x_test = RNG.normal(size=(500, 6)) * 3
  predict = lambda head: np.argmax(x_test @ head["kernel"] + head["bias"], axis=1)
  head = recovery.probe_head(x, y, classes, scaling="none")
  chex.assert_shape([head["kernel"], head["bias"]], [(6, classes), (classes,)])
  raw = LogisticRegression(max_iter=2000, random_state=0).fit(x, y)
  assert np.mean(predict(head) == raw.predict(x_test)) > 0.995
  # Centred and divided by one number, folded into the layer.
  centred = (x - x.mean(0)) / (x - x.mean(0)).std()
  scaled = LogisticRegression(max_iter=2000, random_state=0).fit(centred, y)
  expected = scaled.predict((x_test - x.mean(0)) / (x - x.mean(0)).std())
  assert np.mean(predict(recovery.probe_head(x, y, classes)) == expected) > 0.995
  # Standardised per feature (probes.linear_probe's pipeline), folded into the layer.
  probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
  expected = probe.fit(x, y).predict(x_test)
  assert np.mean(predict(recovery.probe_head(x, y, classes, scaling="per_feature")) == expected) > 0.995
  # Control: that pipeline's coefficients without folding in the standardisation.
  coef = probe[-1].coef_.T if classes > 2 else np.concatenate([-probe[-1].coef_, probe[-1].coef_]).T
  assert np.mean(np.argmax(x_test @ coef, axis=1) == expected) < 0.95


def test_probe_head_with_one_class_predicts_it_and_fits_the_classifier():
  head = recovery.probe_head(RNG.normal(size=(8, 4)), np.ones(8, np.int32), 2)
  assert np.argmax(RNG.normal(size=(5, 4)) @ head["kernel"] + head["bias"], axis=1).tolist() == [1] * 5
  clf = de.LightClassifier(widths=(4, 4, 4), hidden=4)
  params = jax.device_get(jax.jit(clf.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
  placed = recovery.with_head(params, head)
  chex.assert_trees_all_close(placed["params"]["head"], head)
  chex.assert_trees_all_close(placed["params"]["image_tower"], params["params"]["image_tower"])
  with pytest.raises(ValueError, match="allowed"):
    recovery.with_head(params, recovery.probe_head(RNG.normal(size=(8, 5)), np.ones(8, np.int32), 2))
  with pytest.raises(ValueError, match="allowed"):
    recovery.probe_head(RNG.normal(size=(8, 4)), np.full(8, 2, np.int32), 2)
  with pytest.raises(ValueError, match="allowed"):
    recovery.probe_head(RNG.normal(size=(8, 4)), np.ones(8, np.int32), 2, scaling="minmax")


# -- last-block freezing and the learning-rate grid's optimizer -----------------------------------
RELATIVE = optax.cosine_decay_schedule(1.0, 10)
OPTIMIZERS = {  # built once: the tests share their (compiled) runs
    "adam": lambda: optax.adam(optax.cosine_decay_schedule(3e-2, 10)),
    "peak_adam": lambda: recovery.peak_adam(3e-2, RELATIVE),
    "frozen": lambda: recovery.freeze(optax.adam(optax.cosine_decay_schedule(3e-2, 10)),
                                      recovery.LAST_BLOCK_FROZEN)}


@functools.lru_cache(maxsize=None)
def _classifier_steps(name, steps=3):
  """(params before, params after) ``steps`` updates of a small light classifier on one batch."""
  optimizer = OPTIMIZERS[name]()
  clf = de.LightClassifier(widths=(4, 4, 4), hidden=8)
  rng = np.random.default_rng(5)                  # the same batch for every optimizer
  images = jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32)
  batch = {"images": images, "labels": jnp.asarray(rng.integers(0, 2, 16), jnp.int32)}
  params = jax.jit(clf.init)(jax.random.key(1), images[:1])
  step = jax.jit(train.make_step(de.make_classifier_loss_fn(clf), optimizer))
  state, new = optimizer.init(params), params
  for _ in range(steps):
    new, state, _, _ = step(new, state, batch, jax.random.key(0))
  return params, new


def test_freezing_keeps_the_first_two_convs_and_trains_the_rest():
  before, after = _classifier_steps("frozen")
  tower_b, tower_a = before["params"]["image_tower"], after["params"]["image_tower"]
  for name in ("conv0", "conv1"):
    chex.assert_trees_all_equal(tower_b[name], tower_a[name])
  assert not np.allclose(tower_b["conv2"]["kernel"], tower_a["conv2"]["kernel"])
  assert not np.allclose(tower_b["dense"]["kernel"], tower_a["dense"]["kernel"])
  assert not np.allclose(before["params"]["head"]["kernel"], after["params"]["head"]["kernel"])
  # Control: the same optimizer unfrozen moves conv0.
  before, after = _classifier_steps("adam")
  assert not np.allclose(before["params"]["image_tower"]["conv0"]["kernel"],
                         after["params"]["image_tower"]["conv0"]["kernel"])
  with pytest.raises(ValueError, match="conv9"):
    recovery.freeze_labels(before, ("conv9",))


def test_peak_adam_is_adam_and_one_program_for_every_rate():
  chex.assert_trees_all_close(_classifier_steps("peak_adam")[1], _classifier_steps("adam")[1],
                              rtol=1e-5, atol=1e-7)

  def program(optimizer):
    params = {"w": jnp.ones((3,))}
    update = lambda p, s: optimizer.update(p, s, p)
    return jax.jit(update).lower(params, optimizer.init(params)).as_text()

  assert program(recovery.peak_adam(1e-3, RELATIVE)) == program(recovery.peak_adam(3e-2, RELATIVE))
  # Control: plain Adam bakes the rate into the program.
  assert program(optax.adam(1e-3)) != program(optax.adam(3e-2))
  with pytest.raises(ValueError, match="allowed"):
    recovery.peak_adam(0.0, RELATIVE)


def test_select_takes_the_best_validation_score_first_among_equals():
  assert recovery.select([0.5, 0.9, 0.9, 0.7]) == 1
  with pytest.raises(ValueError):
    recovery.select([])


# -- smallest n, collapse flags, captions seen ---------------------------------------------------
NS = (8, 32, 128, 512)


def test_crossing_interpolates_in_log_n():
  assert recovery.crossing(NS, [0.5, 0.7, 0.9, 1.0], 0.9) == 128.0
  assert recovery.crossing(NS, [0.5, 0.5, 0.8, 1.0], 0.9) == pytest.approx(256.0)   # halfway
  assert recovery.crossing(NS, [0.95, 1.0, 1.0, 1.0], 0.9) == 8.0
  assert recovery.crossing(NS, [0.5, 0.6, 0.7, 0.8], 0.9) is None
  with pytest.raises(ValueError):
    recovery.crossing((32, 8), [0.5, 0.6], 0.9)


def test_smallest_n_over_seeds():
  got = recovery.smallest_n(NS, {0: [0.5, 0.7, 0.9, 1], 1: [0.5, 0.9, 1, 1], 2: [0.5, 0.5, 0.8, 1]},
                            0.9)
  assert got["per_seed"] == {0: 128.0, 1: 32.0, 2: pytest.approx(256.0)}
  assert got["reached"] == 3 and got["geo_mean"] == pytest.approx(2 ** ((7 + 5 + 8) / 3))
  assert got["low"] < got["geo_mean"] < got["high"] and got["median"] == 128.0
  partial = recovery.smallest_n(NS, {0: [0.5, 0.9, 1, 1], 1: [0.5] * 4, 2: [0.5] * 4}, 0.9)
  assert partial["reached"] == 1 and partial["geo_mean"] is None and partial["median"] is None
  one = recovery.smallest_n(NS, {0: [0.95, 1, 1, 1]}, 0.9)
  assert one["geo_mean"] == 8.0 and one["low"] is None and one["at_first"] == 1


def _rows(accs):
  """{(n, seed): acc} -> rows of one method."""
  return [{"method": "finetune", "n_labels": n, "seed": s, "light_acc": a}
          for (n, s), a in accs.items()]


def test_collapse_flags_a_run_at_chance_where_the_method_works():
  # At n = 512 one seed of three stays at chance while the others
  # reach ~1.0; at n = 8 every seed is at chance (too few labels: not a collapse).
  accs = {(8, s): 0.5 for s in range(3)}
  accs.update({(512, 0): 1.0, (512, 1): 0.51, (512, 2): 0.99})
  flagged = recovery.flag_collapsed(_rows(accs))
  assert [(f["n_labels"], f["seed"]) for f in flagged] == [(512, 1)]
  assert "other seeds work" in flagged[0]["why"]
  # A seed that was above chance at a smaller n and falls back to it is flagged on its own.
  accs = {(8, 0): 0.5, (32, 0): 0.8, (128, 0): 0.55}
  flagged = recovery.flag_collapsed(_rows(accs))
  assert [(f["n_labels"], f["why"]) for f in flagged] == [(128, "this seed worked at a smaller n")]
  # Controls: every seed at chance everywhere is never flagged, nor a run just below 0.60 in a cell
  # whose other seeds are barely above it (the method does not work there either).
  assert recovery.flag_collapsed(_rows({(n, s): 0.52 for n in NS for s in range(3)})) == []
  assert recovery.flag_collapsed(_rows({(128, 0): 0.58, (128, 1): 0.63, (128, 2): 0.66})) == []


def test_cap_limited_means_still_improving_at_the_cap():
  row = lambda last, best, early: {"last_step": last, "best_step": best, "stopped_early": early}
  assert recovery.cap_limited(row(800, 775, False), 800, 25)
  assert not recovery.cap_limited(row(800, 500, False), 800, 25)    # flat for 12 evaluations
  assert not recovery.cap_limited(row(450, 250, True), 800, 25)     # stopped by patience


def test_explain_collapse_reads_the_learning_rate_record():
  grid = [{"learning_rate": 3e-3, "val_acc": 0.51, "final_loss": math.log(2), "best_step": 20},
          {"learning_rate": 1e-3, "val_acc": 0.55, "final_loss": 0.01, "best_step": 40}]
  text = recovery.explain_collapse({"lr_grid": grid, "learning_rate": 1e-3, "val_acc": 0.55})
  assert "every learning rate" in text and "constant output" in text and "fits its labels" in text


def test_mentions_seen_counts_the_batches_train_fit_sees():
  mentions = RNG.random(50) < 0.3
  batch_at = pipeline.train_batch_fn({"m": mentions}, 16, seed=3)
  for steps in (0, 1, 3, 7):          # 7 batches of 16 cross two epoch boundaries of 50
    expected = sum(int(batch_at(t)["m"].sum()) for t in range(steps))
    assert recovery.mentions_seen(mentions, 16, 3, steps) == expected
  # Control: another seed's order sees other examples.
  assert any(recovery.mentions_seen(mentions, 16, 4, s) != recovery.mentions_seen(mentions, 16, 3, s)
             for s in (1, 2, 3))
