"""The shared training loop: learns, resumes to identical params, stops on NaN, data-parallel.

The loss uses the step's key, so resume and 1-vs-8-device equality also pin the key schedule
(controls: wrong schedules written out by hand are rejected by the same comparisons)."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import encoders
from invariance import parallel
from invariance import train

MODEL = encoders.MLP((16,), num_classes=2)
RNG = np.random.default_rng(0)
XS = RNG.normal(size=(64, 4, 4, 1)).astype(np.float32)
YS = (XS[:, 0, 0, 0] > 0).astype(np.int32)             # learnable from one pixel


def batch_at(step):
  idx = np.random.default_rng(step).choice(64, 16, replace=False)
  return {"x": XS[idx], "y": YS[idx]}


def loss_fn(params, batch, rng):
  # Uses the step's key (input noise, per example), so a wrong key schedule changes the params.
  logits = MODEL.apply(params, batch["x"] + 0.1 * jax.random.normal(rng, batch["x"].shape))
  acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
  return train.cross_entropy(logits, batch["y"]), {"acc": acc}


@functools.lru_cache(maxsize=None)
def _adam(lr):
  return optax.adam(lr)        # one object per rate, so fit's compiled step is reused


def _fit(steps, ckpt_dir=None, mesh=None, lr=0.05):
  params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
  cfg = train.TrainConfig(steps=steps, log_every=5, checkpoint_dir=ckpt_dir, checkpoint_every=10)
  return train.fit(loss_fn, params, batch_at, _adam(lr), cfg, jax.random.key(1), mesh=mesh)


def _by_hand(steps, key_index, mesh=None):
  """fit's loop written out with train.setup's jitted step, the key of step i being
  fold_in(rng, key_index(i)): key_index(i) = i is fit's schedule, anything else a wrong one."""
  params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
  s = train.setup(loss_fn, params, _adam(0.05), parallel.data_mesh() if mesh is None else mesh,
                  jax.random.key(1))
  params, opt_state = s.params, s.opt_state
  for i in range(steps):
    batch = train.to_global(batch_at(i), s.batch_sharding)
    params, opt_state, _, _ = s.step(params, opt_state, batch, s.key_data, key_index(i))
  return jax.device_get(params)


# Wrong key schedules a resume or a data-parallel step could plausibly have.
WRONG_SCHEDULES = {"restarted_at_resume": lambda i: i if i < 10 else i - 10,
                   "fold_in_ignored": lambda i: 0}


def test_fit_learns():
  params, hist = _fit(60)
  assert hist["loss"][-1] < 0.5 * hist["loss"][0]


def test_resume_gives_identical_params(tmp_path):
  full, _ = _fit(20)
  full = jax.device_get(full)
  # fit's key schedule is fold_in(rng, global step): the loop by hand with it gives the same params.
  chex.assert_trees_all_equal(_by_hand(20, lambda i: i), full)
  _fit(10, str(tmp_path / "ck"))                          # "killed" after step 10
  resumed, hist = _fit(20, str(tmp_path / "ck"))
  assert hist["resumed_from"] == 10 and hist["steps_run"] == 10
  chex.assert_trees_all_equal(jax.device_get(resumed), full)
  # Controls: a resume that restarted the step count, or a loop that ignored the step, trains with
  # other keys and ends elsewhere, which the same assertion rejects.
  for wrong in WRONG_SCHEDULES.values():
    with pytest.raises(AssertionError, match="Values not exactly equal"):
      chex.assert_trees_all_equal(_by_hand(20, wrong), full)
  # Finished: a rerun restores the final checkpoint and trains nothing.
  _, again = _fit(20, str(tmp_path / "ck"))
  assert again["steps_run"] == 0


def test_nan_loss_stops_with_a_clear_error(tmp_path):
  with pytest.raises(FloatingPointError, match="loss is nan"):
    _fit(20, str(tmp_path / "ck"), lr=1e30)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  _fit(10, str(tmp_path / "ck"))
  for f in (tmp_path / "ck" / "10").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with pytest.raises(ValueError, match="unreadable"):
    _fit(20, str(tmp_path / "ck"))


def test_data_parallel_matches_single_device():
  assert jax.device_count() == 8
  one = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                      devices=jax.devices()[:1])
  p1, _ = _fit(10, mesh=one)
  p8, _ = _fit(10)                                         # default: all 8 devices
  p1, p8 = jax.device_get(p1), jax.device_get(p8)
  chex.assert_trees_all_close(p1, p8, atol=1e-5, rtol=1e-5)
  # Control: 8 devices with a wrong key schedule are rejected by the same comparison.
  with pytest.raises(AssertionError, match="Values not approximately equal"):
    chex.assert_trees_all_close(p1, _by_hand(10, WRONG_SCHEDULES["fold_in_ignored"]),
                                atol=1e-5, rtol=1e-5)


def test_checkpoint_past_steps_is_refused(tmp_path):
  _fit(10, str(tmp_path / "ck"))
  with pytest.raises(ValueError, match="past steps"):
    _fit(5, str(tmp_path / "ck"))                          # latest checkpoint 10 > steps=5
  # Control: a checkpoint exactly at steps is a finished run (nothing to train, no error), so the
  # same assertion fails on it.
  with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
    with pytest.raises(ValueError, match="past steps"):
      _fit(10, str(tmp_path / "ck"))


def test_fit_leaves_the_callers_params_alive():
  params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
  cfg = train.TrainConfig(steps=2, log_every=1)
  train.fit(loss_fn, params, batch_at, optax.adam(0.01), cfg, jax.random.key(1))
  train.fit(loss_fn, params, batch_at, optax.adam(0.01), cfg, jax.random.key(1))  # reuse: no error
  assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(params))
