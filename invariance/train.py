"""The one training loop every study uses.

    fit(loss_fn, params, batch_at, optimizer, config, rng) -> (params, history)

* ``loss_fn(params, batch, rng) -> (scalar loss, aux dict of scalars)``, a pure function.
* ``batch_at(step) -> dict of arrays``: the batch for a given step. Batches are a function of the
  step (grain's ``MapDataset`` is random-access), so a resumed run sees exactly the batches an
  uninterrupted run would, and per-step randomness is ``fold_in(rng, step)``.
* Data parallel: the step is jitted over a 1-D ``("data",)`` mesh of all devices (of every process
  under ``jax.distributed``) with the batch sharded on its leading axis and parameters replicated
  (XLA inserts the gradient all-reduce).
* Multi-host: ``batch_at(step)`` returns the *global* batch (every process computes the same
  indices); each process copies only the rows of its own devices to them
  (``jax.make_array_from_callback``), so the global batch - and every loss - is the same whatever
  the number of processes. Orbax saves and restores collectively (every process calls it; the
  checkpoint directory must be on a filesystem all hosts see). The returned params live on one
  local device of each process, ready for local evaluation.
* Checkpoints: orbax ``CheckpointManager`` under ``config.checkpoint_dir`` every
  ``checkpoint_every`` steps and at the end; ``fit`` resumes from the latest finished checkpoint.
  Orbax writes into a temporary directory and renames it when complete, so a SIGKILL mid-save
  leaves the previous checkpoint as the latest one.
* Curves: with ``config.metrics_path``, every step's scalars (``loss``, ``lr`` when a schedule
  is given, and every aux scalar the loss function returns) are appended to that JSON-lines file,
  flushed at each progress line and checkpoint. A resumed run first drops the records past the
  checkpoint it resumes from, and a torn last line (what a kill during an append leaves), so the
  file holds each step once; any other unreadable line is an error naming the file.
* TensorBoard: with ``config.events_dir``, the same scalars (and the validation score, tag
  ``val``) go to event files there too (tensorboardX, no TensorFlow), flushed with the metrics
  file; a resumed run purges the steps past its checkpoint. ``metrics.jsonl`` stays the source of
  truth.
* Profiles: ``config.profile_steps=(a, b)`` traces steps a .. b-1 with ``jax.profiler`` into
  ``config.profile_dir`` (TensorBoard's profile tab, Perfetto); a ``gs://`` directory gets the
  trace once it is finished.
* Files: every path may be local or ``gs://`` (``invariance.storage``; orbax writes checkpoints to
  Cloud Storage itself).
* ``project(params) -> params`` (optional) runs after every update inside the jitted step, e.g.
  to clamp CLIP's log logit scale at ln 100 after the update rather than inside the loss.
* A non-finite loss stops training with ``FloatingPointError`` before anything is saved; a
  checkpoint past ``config.steps`` is refused with a ``ValueError``.
* ``load_params(directory, step, like)`` reads the params of a checkpoint ``fit`` wrote.
* An unreadable checkpoint is a one-line ``ValueError``; orbax's manager is closed first, and the
  reads orbax abandoned stay quiet when they finish (see ``_quiet_abandoned_reads``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np
import optax
from absl import logging

from invariance import early_stopping
from invariance import parallel
from invariance import storage
from invariance.early_stopping import EarlyStopping  # noqa: F401  (the rule: train.EarlyStopping)
from invariance.losses import cross_entropy  # noqa: F401  (kept for the studies' imports)

PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int
  name: str = "model"                     # used in progress lines
  log_every: int = 100
  checkpoint_dir: Optional[str] = None    # None: no checkpoints
  checkpoint_every: int = 500
  max_to_keep: int = 2
  metrics_path: Optional[str] = None      # None: no per-step metrics file
  early_stopping: Optional[EarlyStopping] = None   # needs fit(..., validate=)
  events_dir: Optional[str] = None        # None: no TensorBoard event files
  profile_dir: Optional[str] = None       # where profile_steps' trace goes
  profile_steps: Optional[tuple[int, int]] = None  # (a, b): trace steps a .. b-1

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f"steps={self.steps} must be >= 1")
    if self.log_every < 1 or self.checkpoint_every < 1:
      raise ValueError("log_every and checkpoint_every must be >= 1")
    if self.profile_steps is not None:
      a, b = self.profile_steps
      if not 0 <= a < b or self.profile_dir is None:
        raise ValueError(f"profile_steps={self.profile_steps}: allowed (a, b) with 0 <= a < b, "
                         "and a profile_dir")


@functools.lru_cache(maxsize=64)
def _jitted_step(loss_fn: Callable, optimizer: optax.GradientTransformation, mesh, key_impl: str,
                 project: Optional[Callable] = None):
  """The jitted update for (loss_fn, optimizer, mesh); cached so that reusing the same loss and
  optimizer objects (e.g. the seeds of one model) compiles once."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  update = make_step(loss_fn, optimizer, project)

  def step(params, opt_state, batch, key_data, step_index):
    # The step's randomness is derived inside the program: no per-step key crosses hosts.
    rng = jax.random.wrap_key_data(key_data, impl=key_impl)
    return update(params, opt_state, batch, jax.random.fold_in(rng, step_index))

  return jax.jit(step, in_shardings=(replicated, replicated, batch_shard, replicated, replicated),
                 out_shardings=replicated, donate_argnums=(0, 1))


class Setup(NamedTuple):
  """What ``fit``'s loop runs: the jitted update over a mesh and its starting state."""
  step: Callable            # (params, opt_state, global batch, key_data, step) -> (..., loss, aux)
  params: PyTree            # replicated global arrays (a copy: the step donates them)
  opt_state: PyTree         # replicated global arrays (Adam's step count too)
  key_data: jax.Array       # the run's key, replicated; each step folds in its index
  batch_sharding: jax.sharding.NamedSharding


def setup(loss_fn: Callable, params: PyTree, optimizer: optax.GradientTransformation, mesh,
          rng, project: Optional[Callable] = None) -> Setup:
  """The update step and state ``fit`` starts from (also used by the train-step benchmark)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  params = to_global(params, replicated)
  # jit with a replicated output: every leaf (Adam's step count too) is global on every process.
  opt_state = jax.jit(optimizer.init, out_shardings=replicated)(params)
  return Setup(_jitted_step(loss_fn, optimizer, mesh, str(jax.random.key_impl(rng)), project),
               params,
               opt_state, to_global(jax.random.key_data(rng), replicated),
               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS)))


def to_global(tree: PyTree, sharding: jax.sharding.NamedSharding) -> PyTree:
  """Host values (the same on every process) as global arrays with ``sharding``: each process
  fills only its own devices (for a batch sharded on "data": its own rows). ``jax.device_put``
  refuses shardings that span other processes' devices."""
  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(place, tree)


def local_copy(params: PyTree) -> PyTree:
  """Replicated global arrays as single-device arrays on this process (for local evaluation)."""
  return jax.tree.map(lambda x: x.addressable_data(0), params)


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
              project: Optional[Callable] = None):
  """The pure update: (params, opt_state, batch, rng) -> (params, opt_state, loss, aux);
  ``project`` (if given) maps the updated params, e.g. a clamp."""

  def step(params, opt_state, batch, rng):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params if project is None else project(params)), opt_state, loss, aux

  return step


class _Checkpoints:
  """Thin wrapper over orbax's CheckpointManager for {params, opt_state}."""

  def __init__(self, directory: Optional[str], every: int, max_to_keep: int):
    self.manager = None
    if directory is None:
      return
    import orbax.checkpoint as ocp  # local: only needed when checkpointing

    self._ocp = ocp
    options = ocp.CheckpointManagerOptions(save_interval_steps=every, max_to_keep=max_to_keep,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> Optional[int]:
    return None if self.manager is None else self.manager.latest_step()

  def restore(self, step: int, target: PyTree) -> PyTree:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            target)
    _quiet_abandoned_reads()
    try:
      return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for damaged files
      directory = self.manager.directory
      self.close()
      raise ValueError(f"checkpoint at step {step} in {directory} is unreadable "
                       f"({type(e).__name__}); delete that step directory to retrain") from e

  def save(self, step: int, state: PyTree, force: bool = False) -> None:
    if self.manager is not None:
      self.manager.save(step, args=self._ocp.args.StandardSave(state), force=force)

  def close(self) -> None:
    if self.manager is not None:
      manager, self.manager = self.manager, None
      manager.wait_until_finished()
      manager.close()


def _is_abandoned_read(unraisable) -> bool:
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed")


def _quiet_abandoned_reads() -> None:
  """From a restore on, drop the "Event loop is closed" errors of reads a failed restore abandons.

  Orbax restores every array concurrently on an asyncio loop; when one read fails it closes that
  loop while tensorstore is still finishing the others, and each of those, on completion, tries
  to wake the closed loop from a tensorstore thread. Python reports each as an unraisable
  exception (tens to hundreds of tracebacks around the one-line error, some while the restore is
  still unwinding, hence installed before it). Nothing can be read back through a closed loop,
  so those - and only those - are dropped; every other unraisable exception still reaches the
  previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "quiet_abandoned_reads", False):
    return

  def hook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  hook.quiet_abandoned_reads = True
  sys.unraisablehook = hook


def read_metrics(path: str, resume_step: Optional[int] = None) -> list[dict]:
  """The records of a ``metrics.jsonl`` ([] if there is none). A torn last line (a kill during
  an append) is dropped; any other unreadable line raises ``ValueError`` naming the file.
  ``resume_step``: keep only the records up to that step."""
  if not storage.exists(path):
    return []
  lines = storage.read_text(path).split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      step = record["step"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      if i == len(lines) - 1:      # no newline after it: an append that a kill cut short
        logging.warning("%s: dropped its torn last line (%d characters)", path, len(line))
        break
      raise ValueError(f"{path}: line {i + 1} is not a metrics record ({e}); allowed: delete "
                       "that file (its run's curves restart) or the line") from None
    if resume_step is None or step <= resume_step:
      records.append(record)
  return records


class _Events:
  """TensorBoard scalars, one event per record and tag, written synchronously (tensorboardX's
  ``EventsWriter``: TFRecord framing, a local file or a ``gs://`` object rewritten on flush).
  A resumed run's file starts with TensorBoard's purge marker (a SessionLog START at the first
  new step), so curves an earlier, killed attempt logged past the checkpoint are hidden."""

  def __init__(self, directory: str, resume_step: int):
    from tensorboardX import event_file_writer
    from tensorboardX import summary
    from tensorboardX.proto import event_pb2
    if not storage.is_remote(directory):
      os.makedirs(directory, exist_ok=True)
    self._pb, self._summary = event_pb2, summary
    self._writer = event_file_writer.EventsWriter(storage.join(directory, "events"),
                                                  f".{os.getpid()}.from{resume_step}")
    if resume_step:
      self._writer.write_event(event_pb2.Event(
          step=resume_step + 1, wall_time=time.time(),
          session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

  def write(self, records: list[dict]) -> None:
    for record in records:
      for tag, value in record.items():
        if tag != "step":
          self._writer.write_event(self._pb.Event(step=record["step"], wall_time=time.time(),
                                                  summary=self._summary.scalar(tag, value)))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class _MetricsLog:
  """Per-step scalars as JSON lines, and as TensorBoard events (see module docstring); only
  process 0 writes."""

  def __init__(self, path: Optional[str], resume_step: int, events_dir: Optional[str] = None):
    self.path, self.pending, self.events = path, [], None
    if jax.process_index() != 0:
      self.path = None
      return
    if path is not None:
      if not storage.is_remote(path):
        os.makedirs(storage.parent(path), exist_ok=True)
      kept = read_metrics(path, resume_step)   # drop records past the checkpoint we resume from
      storage.write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    if events_dir is not None:
      self.events = _Events(events_dir, resume_step)

  def add(self, step: int, loss, aux: dict, lr) -> None:
    if self.path is not None or self.events is not None:
      record = {"step": step, "loss": loss, **{k: v for k, v in aux.items() if np.ndim(v) == 0}}
      self.pending.append(record if lr is None else {**record, "lr": lr})

  def add_validation(self, score: float) -> None:
    if self.pending:
      self.pending[-1]["val"] = score

  def flush(self) -> None:
    if not self.pending:
      return
    records = [{k: int(v) if k == "step" else float(v) for k, v in record.items()}
               for record in jax.device_get(self.pending)]
    self.pending = []
    if self.path is not None:
      storage.append(self.path, "".join(json.dumps(r) + "\n" for r in records))
    if self.events is not None:
      self.events.write(records)

  def close(self) -> None:
    self.flush()
    if self.events is not None:
      self.events.close()
      self.events = None


class _Profile:
  """``jax.profiler`` trace of steps a .. b-1 (``TrainConfig.profile_steps``): started before
  step a, stopped once step b-1's results are ready. A ``gs://`` destination gets the trace
  copied up when it stops (the profiler writes local files)."""

  def __init__(self, steps: Optional[tuple[int, int]], directory: Optional[str]):
    self.steps, self.directory, self.local, self.on = steps, directory, None, False

  def before(self, step: int) -> None:
    if self.steps is not None and step == self.steps[0]:
      self.local = (tempfile.mkdtemp(prefix="profile-") if storage.is_remote(self.directory)
                    else self.directory)
      jax.profiler.start_trace(self.local)
      self.on = True

  def after(self, step: int, outputs) -> None:
    if self.on and step + 1 == self.steps[1]:
      self.stop(outputs)

  def stop(self, outputs=None) -> None:
    if not self.on:
      return
    jax.block_until_ready(outputs)
    jax.profiler.stop_trace()
    self.on = False
    if self.local != self.directory:
      storage.copy_tree(self.local, self.directory)


class _Resume(NamedTuple):
  """What a run starts from: fresh, or a checkpoint's state."""
  params: PyTree
  opt_state: PyTree
  step: int                            # first step to run
  checkpoint: Optional[int]            # the checkpoint's step, None for a fresh run
  loss: float                          # the checkpoint's last loss (NaN for a fresh run)
  seconds: float                       # training time before this call
  rule: early_stopping.State
  best: Optional[PyTree]               # the best parameters so far (None before an evaluation)


def _checkpoint_state(params, opt_state, loss_array, seconds: float, rule, best, evaluations,
                      replicated) -> dict:
  """The checkpoint's tree: params, optimizer, last loss, training seconds and, with a rule
  (``evaluations`` not None), its best params and state (``early_stopping.to_array``)."""
  state = {"params": params, "opt_state": opt_state, "loss": loss_array,
           "seconds": to_global(np.float32(seconds), replicated)}
  if evaluations is not None:
    vector, curve = early_stopping.to_array(rule, evaluations)
    state["early"] = {"best": params if best is None else best,
                      "state": to_global(vector, replicated), "curve": to_global(curve, replicated)}
  return state


def _resume(ckpt: "_Checkpoints", config: TrainConfig, params, opt_state, replicated) -> _Resume:
  """The latest checkpoint's state, or the fresh start; a checkpoint past ``config.steps`` is a
  ``ValueError``."""
  early = config.early_stopping
  evaluations = None if early is None else early.evaluations(config.steps)
  step = ckpt.latest_step()
  if step is None:
    return _Resume(params, opt_state, 0, None, math.nan, 0.0, early_stopping.State(), None)
  if step > config.steps:
    ckpt.close()
    raise ValueError(f"{config.name}: the checkpoint at step {step} in {config.checkpoint_dir} "
                     f"is past steps={config.steps}; allowed: steps >= {step}, or a new "
                     "checkpoint directory")
  zero = to_global(np.zeros((), np.float32), replicated)
  target = _checkpoint_state(params, opt_state, zero, 0.0, early_stopping.State(), None,
                             evaluations, replicated)
  state = ckpt.restore(step, target)
  rule, best = early_stopping.State(), None
  if early is not None:
    rule = early_stopping.from_array(state["early"]["state"], state["early"]["curve"])
    best = state["early"]["best"]
  logging.info("%s: resumed from checkpoint at step %d", config.name, step)
  return _Resume(state["params"], state["opt_state"], step, step, float(state["loss"]),
                 float(state["seconds"]), rule, best)


def _check_batch(first: dict, mesh, name: str) -> int:
  """The global batch size; ``ValueError`` unless the data mesh's devices divide it."""
  batch_size = int(np.shape(jax.tree.leaves(first)[0])[0])
  n_dev = mesh.shape[parallel.DATA_AXIS]
  if batch_size % n_dev:
    raise ValueError(f"{name}: batch size {batch_size} must be a multiple of the {n_dev} devices "
                     "of the data mesh")
  return batch_size


def _finite(loss: float, name: str, done: int, what: str) -> None:
  if not np.isfinite(loss):
    raise FloatingPointError(f"{name}: loss is {loss} at step {done}; training stopped ({what})")


class _Progress:
  """Progress lines: the step, loss and aux scalars, examples per second since the previous line,
  and the time left at that rate."""

  def __init__(self, name: str, steps: int, batch_size: int, start: int):
    self.name, self.steps, self.batch_size = name, steps, batch_size
    self.time, self.step = time.perf_counter(), start

  def log(self, done: int, loss: float, aux: dict) -> None:
    now = time.perf_counter()
    rate = (done - self.step) * self.batch_size / max(now - self.time, 1e-9)
    eta = (self.steps - done) * self.batch_size / max(rate, 1e-9)
    extra = " ".join(f"{k}={float(v):.4g}" for k, v in aux.items())
    logging.info("%s step %d/%d loss=%.4f %s %.0f ex/s ETA %.0fs", self.name, done, self.steps,
                 loss, extra, rate, eta)
    self.time, self.step = now, done


def final_loss(history: dict) -> Optional[float]:
  """The last logged training loss of a ``fit`` history (None if nothing was logged)."""
  return history["loss"][-1] if history["loss"] else None


def fit(loss_fn: Callable, params: PyTree, batch_at: Callable[[int], dict],
        optimizer: optax.GradientTransformation, config: TrainConfig, rng,
        mesh=None, schedule: Optional[Callable[[int], Any]] = None,
        project: Optional[Callable] = None,
        validate: Optional[Callable[[PyTree], float]] = None) -> tuple[PyTree, dict]:
  """Train ``params`` for ``config.steps`` steps (resuming from a checkpoint if there is one).

  ``schedule(step)``: the optimizer's learning rate, recorded in the metrics file (optional).
  ``project(params)``: applied after every update (optional; part of the compiled step).
  ``validate(params) -> score`` with ``config.early_stopping``: the convergence rule
  (``invariance.early_stopping``); the best parameters are returned, and the rule's state is
  checkpointed so a resumed run stops where an uninterrupted one would.
  Returns the final (or best) params and a history dict: ``loss`` (per logged step),
  ``logged_steps``, ``steps_run`` (this call), ``resumed_from`` (step or None), ``seconds`` (this
  call), ``train_seconds`` (training time of the whole run, across resumes), ``last_step`` and,
  with early stopping, ``best_step``, ``best_score``, ``stopped_early`` and ``val_curve``
  ([(step, score)]).
  """
  early = config.early_stopping
  if early is not None and validate is None:
    raise ValueError(f"{config.name}: early_stopping needs a validate function")
  evaluations = None if early is None else early.evaluations(config.steps)
  mesh = parallel.data_mesh() if mesh is None else mesh
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # params is a copy: the caller's arrays survive the step's donation.
  step_fn, params, opt_state, key_data, batch_shard = setup(loss_fn, params, optimizer, mesh, rng,
                                                           project)
  ckpt = _Checkpoints(config.checkpoint_dir, config.checkpoint_every, config.max_to_keep)
  start = _resume(ckpt, config, params, opt_state, replicated)
  params, opt_state, rule, best = start.params, start.opt_state, start.rule, start.best
  metrics_log = _MetricsLog(config.metrics_path, start.step, config.events_dir)
  profile = _Profile(config.profile_steps, config.profile_dir)
  first = batch_at(start.step)
  try:
    batch_size = _check_batch(first, mesh, config.name)
  except ValueError:
    ckpt.close()
    metrics_log.close()
    raise

  history = {"loss": [], "logged_steps": [], "resumed_from": start.checkpoint}
  t0 = time.perf_counter()
  last = start.step
  progress = _Progress(config.name, config.steps, batch_size, start.step)
  try:
    for step in range(start.step, config.steps):
      if rule.stopped:                         # stopped early before the resume
        break
      # -- the update step
      batch = first if step == start.step else batch_at(step)
      profile.before(step)
      params, opt_state, loss_array, aux = step_fn(params, opt_state,
                                                   to_global(batch, batch_shard), key_data, step)
      profile.after(step, loss_array)
      done = last = step + 1
      metrics_log.add(done, loss_array, aux, None if schedule is None else schedule(step))
      # -- the convergence rule
      if early is not None and (done % early.every == 0 or done == config.steps):
        score = float(np.float32(validate(params)))   # as the checkpoint stores it
        metrics_log.add_validation(score)
        if early_stopping.improves(rule, early, score):
          best = jax.tree.map(lambda x: x.copy(), params)
        rule = early_stopping.update(rule, early, done, score)
        if rule.stopped:
          logging.info("%s: stopped at step %d: no improvement over %.4f (step %d) for %d "
                       "evaluations", config.name, done, rule.best_score, rule.best_step,
                       early.patience)
      # -- progress line
      if done % config.log_every == 0 or done == config.steps:
        loss = float(loss_array)
        _finite(loss, config.name, done, "lower the learning rate; checkpoints up to step "
                f"{ckpt.latest_step()} are kept")
        progress.log(done, loss, aux)
        history["loss"].append(loss)
        history["logged_steps"].append(done)
        metrics_log.flush()
      # -- checkpoint
      if done % config.checkpoint_every == 0 or done == config.steps or rule.stopped:
        _finite(float(loss_array), config.name, done, "before saving")
        seconds = start.seconds + time.perf_counter() - t0
        ckpt.save(done, _checkpoint_state(params, opt_state, loss_array, seconds, rule, best,
                                          evaluations, replicated),
                  force=done == config.steps or rule.stopped)
        metrics_log.flush()
      if rule.stopped:
        history["loss"].append(float(loss_array))
        history["logged_steps"].append(done)
        break
  finally:
    profile.stop()
    ckpt.close()
    metrics_log.close()
  if start.checkpoint is not None and last == start.step:   # finished before: its final loss
    history["loss"], history["logged_steps"] = [start.loss], [start.step]
  if early is not None:
    params = best
    history.update(best_score=rule.best_score, best_step=rule.best_step,
                   stopped_early=rule.stopped, val_curve=list(rule.curve))
  if jax.process_count() > 1:
    params = local_copy(params)
  history["last_step"] = last
  history["steps_run"] = last - start.step
  history["seconds"] = time.perf_counter() - t0
  history["train_seconds"] = start.seconds + (history["seconds"] if history["steps_run"] else 0.0)
  return params, history


def load_params(directory: str, step: int, like: PyTree) -> PyTree:
  """The ``params`` (numpy) of the checkpoint ``fit`` saved at ``step`` in ``directory``, restored
  onto this process's first device whatever topology saved it. Raises ``ValueError`` (one line)
  for a missing or unreadable checkpoint or one whose parameters differ from ``like``'s shapes."""
  import orbax.checkpoint as ocp  # local: only needed when checkpointing
  if not storage.isdir(directory):
    raise ValueError(f"{directory}: no such checkpoint directory")
  manager = ocp.CheckpointManager(storage.absolute(directory),
                                  options=ocp.CheckpointManagerOptions(create=False),
                                  item_handlers=ocp.StandardCheckpointHandler())
  # Restore onto this process's first device, not the sharding the checkpoint was saved with
  # (that names the devices, and under multi-host the hosts, of the run that wrote it).
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  _quiet_abandoned_reads()
  try:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
                          dict(manager.item_metadata(step)))
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as e:  # orbax raises many types for damaged files
    raise ValueError(f"{directory}: checkpoint at step {step} is unreadable "
                     f"({type(e).__name__}); allowed: a finished, readable checkpoint") from None
  finally:
    manager.close()
  params = jax.device_get(state["params"])
  shapes = lambda t: jax.tree.map(lambda x: tuple(np.shape(x)), t)
  if jax.tree.structure(params) != jax.tree.structure(like) or shapes(params) != shapes(like):
    raise ValueError(f"{directory}: its checkpoint's parameters do not match the model's; "
                     "allowed: a checkpoint of the same model")
  return params
