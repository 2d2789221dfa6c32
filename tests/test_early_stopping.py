"""train.fit's convergence rule: evaluate every E steps, keep the best params, stop after P
evaluations without an improvement of more than min_delta; exact across a resume."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import encoders
from invariance import train

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
  return train.cross_entropy(logits, batch["y"]), {}


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
