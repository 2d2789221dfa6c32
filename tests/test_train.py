"""The shared training loop: learns, resumes to identical params, stops on NaN, data-parallel."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import encoders as E
from invariance import train

MODEL = E.MLP((16,), num_classes=2)
RNG = np.random.default_rng(0)
XS = RNG.normal(size=(64, 4, 4, 1)).astype(np.float32)
YS = (XS[:, 0, 0, 0] > 0).astype(np.int32)             # learnable from one pixel


def batch_at(step):
  idx = np.random.default_rng(step).choice(64, 16, replace=False)
  return {"x": XS[idx], "y": YS[idx]}


def loss_fn(params, batch, rng):
  logits = MODEL.apply(params, batch["x"])
  return train.cross_entropy(logits, batch["y"]), {"acc": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}


@functools.lru_cache(maxsize=None)
def _adam(lr):
  return optax.adam(lr)        # one object per rate, so fit's compiled step is reused


def _fit(steps, ckpt_dir=None, mesh=None, lr=0.05):
  params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
  cfg = train.TrainConfig(steps=steps, log_every=5, checkpoint_dir=ckpt_dir, checkpoint_every=10)
  return train.fit(loss_fn, params, batch_at, _adam(lr), cfg, jax.random.key(1), mesh=mesh)


def test_fit_learns():
  params, hist = _fit(60)
  assert hist["loss"][-1] < 0.5 * hist["loss"][0]


def test_resume_gives_identical_params(tmp_path):
  full, _ = _fit(30)
  _fit(20, str(tmp_path / "ck"))                          # "killed" after step 20
  resumed, hist = _fit(30, str(tmp_path / "ck"))
  assert hist["resumed_from"] == 20 and hist["steps_run"] == 10
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(full))
  # Finished: a rerun restores the final checkpoint and trains nothing.
  _, again = _fit(30, str(tmp_path / "ck"))
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
  chex.assert_trees_all_close(jax.device_get(p1), jax.device_get(p8), atol=1e-5, rtol=1e-5)


def test_fit_leaves_the_callers_params_alive():
  params = jax.jit(MODEL.init)(jax.random.key(0), XS[:1])
  cfg = train.TrainConfig(steps=2, log_every=1)
  train.fit(loss_fn, params, batch_at, optax.adam(0.01), cfg, jax.random.key(1))
  train.fit(loss_fn, params, batch_at, optax.adam(0.01), cfg, jax.random.key(1))  # reuse: no error
  assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(params))
