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
from invariance import losses
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
  return losses.cross_entropy(logits, batch["y"]), {"acc": acc}


@functools.lru_cache(maxsize=None)
def _init_host():
  return jax.device_get(jax.jit(MODEL.init)(jax.random.key(0), XS[:1]))


def _init():
  """The model's initial params as fresh device arrays: one init program for the whole file."""
  return jax.tree.map(jnp.array, _init_host())


@functools.lru_cache(maxsize=None)
def _adam(lr):
  return optax.adam(lr)        # one object per rate, so fit's compiled step is reused


def _fit(steps, ckpt_dir=None, mesh=None, lr=0.05, batches=batch_at):
  params = _init()
  cfg = train.TrainConfig(steps=steps, log_every=5, checkpoint_dir=ckpt_dir, checkpoint_every=10)
  return train.fit(loss_fn, params, batches, _adam(lr), cfg, jax.random.key(1), mesh=mesh)


def _by_hand(steps, key_index, mesh=None):
  """fit's loop written out with train.setup's jitted step, the key of step i being
  fold_in(rng, key_index(i)): key_index(i) = i is fit's schedule, anything else a wrong one."""
  params = _init()
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
  # Past step 12 the inputs turn to NaN, so the loss does (the same compiled step as every run).
  poisoned = lambda step: batch_at(step) if step < 12 else {"x": XS[:16] * np.nan, "y": YS[:16]}
  with pytest.raises(FloatingPointError,
                     match="loss is nan at step 15.*checkpoints up to step 10 are kept"):
    _fit(20, str(tmp_path / "ck"), batches=poisoned)


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
  params = _init()
  cfg = train.TrainConfig(steps=2, log_every=1)
  train.fit(loss_fn, params, batch_at, _adam(0.05), cfg, jax.random.key(1))
  train.fit(loss_fn, params, batch_at, _adam(0.05), cfg, jax.random.key(1))  # reuse: no error
  assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(params))


def _clamp(params, bound=0.05):
  return jax.tree.map(lambda x: jnp.clip(x, -bound, bound), params)


def test_project_runs_after_every_update():
  """fit(project=...) against projected Adam written out with optax (the step's key is
  fold_in(rng, step)); controls: no projection, and one projection at the end only."""
  steps, opt = 12, _adam(0.05)
  params = _init()
  cfg = train.TrainConfig(steps=steps, log_every=steps)
  got, _ = train.fit(loss_fn, params, batch_at, opt, cfg, jax.random.key(1), project=_clamp)
  got = jax.device_get(got)

  @jax.jit
  def adam_step(p, state, batch, i):        # one compiled update; the projection stays outside
    grads, _ = jax.grad(loss_fn, has_aux=True)(p, batch, jax.random.fold_in(jax.random.key(1), i))
    updates, state = opt.update(grads, state, p)
    return optax.apply_updates(p, updates), state

  def by_hand(project_each, project_end):
    p, state = jax.device_get(params), opt.init(params)
    for i in range(steps):
      p, state = adam_step(p, state, batch_at(i), i)
      p = project_each(p)
    return jax.device_get(project_end(p))

  same = lambda a, b: all(np.allclose(x, y, rtol=1e-5, atol=1e-6)
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  clamp = jax.jit(_clamp)
  assert same(got, by_hand(clamp, lambda p: p))
  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(got)) <= np.float32(0.05)
  assert not same(got, by_hand(lambda p: p, lambda p: p))        # the projection acted
  assert not same(got, by_hand(lambda p: p, clamp))              # ... after every update


# -- files beside the checkpoints: metrics.jsonl, TensorBoard events, profiles -----------------------
def _fit_logged(steps, tmp_path, lr=0.05, **files):
  params = _init()
  cfg = train.TrainConfig(steps=steps, log_every=5, checkpoint_every=10,
                          checkpoint_dir=str(tmp_path / "ck"), metrics_path=str(tmp_path / "m.jsonl"),
                          **files)
  return train.fit(loss_fn, params, batch_at, _adam(lr), cfg, jax.random.key(1),
                   schedule=optax.constant_schedule(lr))


def test_tensorboard_events_hold_the_metrics_curves(tmp_path):
  """Every step's loss, learning rate and aux scalars, read back from the event files, equal the
  metrics.jsonl records (float32, as TensorBoard stores them); a run with another learning rate
  is the control the same comparison rejects."""
  from tests import events
  _fit_logged(12, tmp_path / "a", events_dir=str(tmp_path / "a" / "tb"))
  _fit_logged(12, tmp_path / "b", lr=0.2, events_dir=str(tmp_path / "b" / "tb"))
  jsonl = train.read_metrics(str(tmp_path / "a" / "m.jsonl"))
  assert [r["step"] for r in jsonl] == list(range(1, 13))
  curves = {run: events.scalars(str(tmp_path / run / "tb")) for run in ("a", "b")}
  assert set(curves["a"]) == {"loss", "lr", "acc"}
  for tag in ("loss", "lr", "acc"):
    expected = [(r["step"], r[tag]) for r in jsonl]
    np.testing.assert_allclose(curves["a"][tag], expected, rtol=1e-6)
    if tag != "acc":
      with pytest.raises(AssertionError):
        np.testing.assert_allclose(curves["b"][tag], expected, rtol=1e-6)


def test_tensorboard_events_without_a_metrics_file(tmp_path):
  from tests import events
  params = _init()
  cfg = train.TrainConfig(steps=5, log_every=5, events_dir=str(tmp_path / "tb"))
  train.fit(loss_fn, params, batch_at, _adam(0.05), cfg, jax.random.key(1))
  assert [s for s, _ in events.scalars(str(tmp_path / "tb"))["loss"]] == [1, 2, 3, 4, 5]


def test_profile_steps_write_a_trace_of_those_steps_only(tmp_path):
  _fit_logged(6, tmp_path, profile_steps=(2, 4), profile_dir=str(tmp_path / "profile"))
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0, traces
  # Control: no profile_steps, no trace.
  _fit_logged(6, tmp_path / "none", profile_dir=str(tmp_path / "none" / "profile"))
  assert not (tmp_path / "none" / "profile").exists()
  with pytest.raises(ValueError, match=r"profile_steps=\(3, 3\): allowed"):
    train.TrainConfig(steps=5, profile_steps=(3, 3), profile_dir=str(tmp_path))


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
  """A kill during an append leaves a partial last line: the resumed run drops it (with the
  records past its checkpoint) and the file holds every step once. A damaged line that is not
  the last is no torn append: the same resume stops with an error naming the file."""
  path = tmp_path / "m.jsonl"
  _fit_logged(10, tmp_path)
  with open(path, "a") as f:
    f.write('{"step": 11, "loss": 0.6')               # torn: no closing brace, no newline
  _fit_logged(20, tmp_path)
  assert [r["step"] for r in train.read_metrics(str(path))] == list(range(1, 21))
  lines = path.read_text().splitlines()
  lines[3] = lines[3][:10]
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=rf"{path}: line 4 is not a metrics record"):
    train.read_metrics(str(path))


def test_an_unreadable_checkpoint_leaves_only_the_error(tmp_path, monkeypatch):
  """Array files damaged, metadata intact: orbax fails one read while tensorstore still finishes
  the others, whose callbacks then hit orbax's closed event loop. Those must not reach the
  process's unraisable-exception hook (each would print a traceback after the one-line error);
  anything else still does (the control)."""
  seen = []
  monkeypatch.setattr("sys.unraisablehook", seen.append)
  _fit(10, str(tmp_path / "ck"))
  for f in (tmp_path / "ck" / "10").rglob("*"):
    if f.is_file() and ("ocdbt.process_0" in str(f) or f.parent.name == "d"):
      f.write_bytes(b"garbage")
  for _ in range(3):
    with pytest.raises(ValueError, match="unreadable"):
      _fit(20, str(tmp_path / "ck"))
  import gc
  import sys
  import time
  time.sleep(0.5)                                       # let the abandoned reads finish
  gc.collect()
  assert [u for u in seen if train._is_abandoned_read(u)] == []
  Unraisable = type("Unraisable", (), {})
  for message in ("Event loop is closed", "some other failure"):
    u = Unraisable()
    u.exc_value = RuntimeError(message)
    sys.unraisablehook(u)
  assert [str(u.exc_value) for u in seen] == ["some other failure"]
