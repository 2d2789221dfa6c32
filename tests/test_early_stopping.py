"""train.fit's convergence rule: evaluate every E steps, keep the best params, stop after P
evaluations without an improvement of more than min_delta; exact across a resume."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import early_stopping as es
from invariance import encoders
from invariance import losses
from invariance import train

# -- the pure rule on scripted validation curves (hand-worked expectations) ----------------------


def _run_rule(scores, every=1, patience=2, min_delta=0.01):
  """Feeds ``scores`` (one per evaluation, steps every, 2 every, ...) until the rule stops; returns
  the states after each evaluation."""
  rule, state, states = es.EarlyStopping(every, patience, min_delta), es.State(), []
  for i, score in enumerate(scores):
    state = es.update(state, rule, (i + 1) * every, score)
    states.append(state)
    if state.stopped:
      break
  return states


def _summary(states):
  return [(s.best_score, s.best_step, s.since_best, s.stopped) for s in states]


def test_gains_below_min_delta_do_not_reset_patience():
  # 0.50 improves on -inf; 0.505 and 0.509 beat the best by less than 0.01: two evaluations
  # without improvement, patience 2 reached at step 3, and the best stays 0.50 at step 1.
  states = _run_rule([0.50, 0.505, 0.509, 0.90])
  assert _summary(states) == [(0.50, 1, 0, False), (0.50, 1, 1, False), (0.50, 1, 2, True)]
  # the control: with min_delta 0 each of those small gains is an improvement and resets patience
  states = _run_rule([0.50, 0.505, 0.509, 0.90], min_delta=0.0)
  assert _summary(states) == [(0.50, 1, 0, False), (0.505, 2, 0, False), (0.509, 3, 0, False),
                              (0.90, 4, 0, False)]


def test_a_gain_just_above_min_delta_resets_patience():
  # 0.511 - 0.50 = 0.011 > 0.01: an improvement (new best at step 3), then 0.52 (+0.009) is not
  states = _run_rule([0.50, 0.49, 0.511, 0.52, 0.515])
  assert _summary(states) == [(0.50, 1, 0, False), (0.50, 1, 1, False), (0.511, 3, 0, False),
                              (0.511, 3, 1, False), (0.511, 3, 2, True)]


def test_ties_and_drops_count_against_patience():
  states = _run_rule([0.7, 0.7, 0.6, 0.9], patience=3, min_delta=0.0)
  assert _summary(states) == [(0.7, 1, 0, False), (0.7, 1, 1, False), (0.7, 1, 2, False),
                              (0.9, 4, 0, False)]
  assert _summary(_run_rule([0.7, 0.7, 0.7], patience=2, min_delta=0.0))[-1] == (0.7, 1, 2, True)


def test_the_curve_records_every_evaluation_and_steps_follow_every():
  states = _run_rule([0.1, 0.3, 0.2, 0.2], every=25, patience=2)
  assert states[-1].curve == ((25, 0.1), (50, 0.3), (75, 0.2), (100, 0.2))
  assert states[-1].stopped and states[-1].best_step == 50


def test_update_is_pure():
  rule, state = es.EarlyStopping(1, 1, 0.0), es.State()
  after = es.update(state, rule, 1, 0.5)
  assert state == es.State() and after.best_score == 0.5


def test_the_checkpoint_layout_round_trips_and_resumes_the_count():
  states = _run_rule([0.50, 0.505, 0.509], patience=3)
  vector, curve = es.to_array(states[-1], evaluations=6)
  assert vector.tolist() == [0.50, 1.0, 2.0, 0.0] and np.isnan(curve[3:]).all()
  resumed = es.from_array(vector, curve)
  assert resumed == states[-1]
  # resumed mid-way, one more gain below min_delta stops the run (the count survived the resume)
  assert es.update(resumed, es.EarlyStopping(1, 3, 0.01), 4, 0.508).stopped
  with pytest.raises(ValueError, match="does not fit"):
    es.to_array(states[-1], evaluations=2)


# -- train.fit under the rule ------------------------------------------------------------------
MODEL = encoders.MLP((8,), num_classes=2)
XS = np.random.default_rng(0).normal(size=(64, 4, 4, 1)).astype(np.float32)
YS = (XS[:, 0, 0, 0] > 0).astype(np.int32)
OPT = optax.adam(0.05)


def batch_at(step):
  idx = np.random.default_rng(step).choice(64, 16, replace=False)
  return {"x": XS[idx], "y": YS[idx]}


def loss_fn(params, batch, rng):
  del rng
  logits = MODEL.apply(params, batch["x"])
  return losses.cross_entropy(logits, batch["y"]), {}


@jax.jit
def val_acc(params):
  return jnp.mean(jnp.argmax(MODEL.apply(params, XS), -1) == YS)


def _fit(steps, early=None, ckpt_dir=None, batches=batch_at):
  params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
  metrics = None if ckpt_dir is None else f"{ckpt_dir}/metrics.jsonl"
  cfg = train.TrainConfig(steps=steps, log_every=3, checkpoint_dir=ckpt_dir, checkpoint_every=4,
                          early_stopping=early, metrics_path=metrics)
  return train.fit(loss_fn, params, batches, OPT, cfg, jax.random.key(1),
                   validate=val_acc if early else None)


RULE = train.EarlyStopping(every=2, patience=3, min_delta=0.005)


@pytest.fixture(scope="module")
def stopped():
  return _fit(200, RULE)


def test_stops_after_patience_evaluations_without_improvement_and_returns_the_best(stopped):
  params, history = stopped
  curve = history["val_curve"]
  assert history["stopped_early"] and history["last_step"] < 200
  best = max(score for _, score in curve)
  assert history["best_score"] >= best - RULE.min_delta
  assert [s for s, _ in curve] == list(range(2, history["last_step"] + 1, 2))
  after = [score for step, score in curve if step > history["best_step"]]
  assert len(after) == RULE.patience                       # exactly P evaluations after the best
  assert all(score <= history["best_score"] + RULE.min_delta for score in after)
  # the returned params are the best step's: a plain run of best_step steps gives the same
  plain, _ = _fit(history["best_step"])
  chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  jax.tree.map(chex_close, jax.device_get(params), jax.device_get(plain))
  # ... and not the last step's (the control)
  last, _ = _fit(history["last_step"])
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(params)),
                                                    jax.tree.leaves(jax.device_get(last))))


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tmp_path, stopped):
  params, history = stopped
  stop_at = max(4, history["last_step"] // 2 // 4 * 4 + 1)    # after a checkpoint, before the stop

  def dies(step):
    if step == stop_at:
      raise KeyboardInterrupt("killed")
    return batch_at(step)
  with pytest.raises(KeyboardInterrupt):
    _fit(200, RULE, str(tmp_path), dies)
  resumed, h2 = _fit(200, RULE, str(tmp_path))
  assert h2["resumed_from"] is not None and h2["resumed_from"] < history["last_step"]
  for key in ("best_step", "best_score", "last_step", "stopped_early", "val_curve"):
    assert h2[key] == history[key], key
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               jax.device_get(resumed), jax.device_get(params))
  again, h3 = _fit(200, RULE, str(tmp_path))                  # finished: nothing more to run
  assert h3["steps_run"] == 0 and h3["best_step"] == history["best_step"]
  # metrics.jsonl: every step once, in order, across the kill and the resume (the steps run
  # after the last checkpoint before the kill were dropped and rerun), validations where run
  import json
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == list(range(1, history["last_step"] + 1))
  assert [(r["step"], r["val"]) for r in records if "val" in r] == [
      tuple(p) for p in history["val_curve"]]


def test_without_the_rule_the_run_goes_to_the_cap():
  _, history = _fit(12)
  assert history["last_step"] == 12 and "best_step" not in history
  with pytest.raises(ValueError, match="validate"):
    params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
    train.fit(loss_fn, params, batch_at, OPT, train.TrainConfig(steps=4, early_stopping=RULE),
              jax.random.key(1))


def test_fit_with_a_rule_whose_min_delta_decides(tmp_path):
  """train.fit follows the pure rule: its val_curve replayed through ``update`` gives its
  best step, best score and stop; with a min_delta larger than any gain it stops after exactly
  patience evaluations past the first."""
  rule = train.EarlyStopping(every=2, patience=2, min_delta=1.0)   # no accuracy gain is > 1
  _, history = _fit(200, rule)
  assert history["stopped_early"] and history["best_step"] == 2 and history["last_step"] == 6
  replay = es.State()
  for step, score in history["val_curve"]:
    replay = es.update(replay, rule, step, score)
  assert (replay.best_step, replay.best_score, replay.stopped) == (
      history["best_step"], history["best_score"], history["stopped_early"])


def test_the_last_step_is_evaluated_when_every_does_not_divide_steps():
  """A run of 10 steps evaluated every 4 is scored at 4, 8 and at its last step, 10, so the best
  parameters can be the final ones."""
  _, history = _fit(10, train.EarlyStopping(every=4, patience=100, min_delta=0.0))
  assert [step for step, _ in history["val_curve"]] == [4, 8, 10]
  assert history["last_step"] == 10 and not history["stopped_early"]
