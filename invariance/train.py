"""The one training loop every study uses.

    fit(loss_fn, params, batch_at, optimizer, config, rng) -> (params, history)

* ``loss_fn(params, batch, rng) -> (scalar loss, aux dict of scalars)``, a pure function.
* ``batch_at(step) -> dict of arrays``: the batch for a given step. Batches are a function of the
  step (grain's ``MapDataset`` is random-access), so a resumed run sees exactly the batches an
  uninterrupted run would, and per-step randomness is ``fold_in(rng, step)``.
* Data parallel: the step is jitted over a 1-D ``("data",)`` mesh of all local devices with the
  batch sharded on its leading axis and parameters replicated (XLA inserts the gradient all-reduce).
* Checkpoints: orbax ``CheckpointManager`` under ``config.checkpoint_dir`` every
  ``checkpoint_every`` steps and at the end; ``fit`` resumes from the latest finished checkpoint.
  Orbax writes into a temporary directory and renames it when complete, so a SIGKILL mid-save
  leaves the previous checkpoint as the latest one.
* A non-finite loss stops training with ``FloatingPointError`` before anything is saved.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int
  name: str = "model"                     # used in progress lines
  log_every: int = 100
  checkpoint_dir: Optional[str] = None    # None: no checkpoints
  checkpoint_every: int = 500
  max_to_keep: int = 2

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f"steps={self.steps} must be >= 1")
    if self.log_every < 1 or self.checkpoint_every < 1:
      raise ValueError("log_every and checkpoint_every must be >= 1")


def data_mesh():
  """1-D mesh over all devices, axis "data" (Auto, so plain jit shardings apply)."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


@functools.lru_cache(maxsize=64)
def _jitted_step(loss_fn: Callable, optimizer: optax.GradientTransformation, mesh):
  """The jitted update for (loss_fn, optimizer, mesh); cached so that reusing the same loss and
  optimizer objects (e.g. the seeds of one model) compiles once."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return jax.jit(make_step(loss_fn, optimizer),
                 in_shardings=(replicated, replicated, batch_shard, replicated),
                 out_shardings=replicated, donate_argnums=(0, 1))


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation):
  """The pure update: (params, opt_state, batch, rng) -> (params, opt_state, loss, aux)."""

  def step(params, opt_state, batch, rng):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

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
    try:
      return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for damaged files
      raise ValueError(f"checkpoint at step {step} in {self.manager.directory} is unreadable "
                       f"({type(e).__name__}); delete that step directory to retrain") from e

  def save(self, step: int, state: PyTree, force: bool = False) -> None:
    if self.manager is not None:
      self.manager.save(step, args=self._ocp.args.StandardSave(state), force=force)

  def close(self) -> None:
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()


def fit(loss_fn: Callable, params: PyTree, batch_at: Callable[[int], dict],
        optimizer: optax.GradientTransformation, config: TrainConfig, rng,
        mesh=None) -> tuple[PyTree, dict]:
  """Train ``params`` for ``config.steps`` steps (resuming from a checkpoint if there is one).

  Returns the final params and a history dict: ``loss`` (per logged step), ``steps_run`` (this
  call), ``resumed_from`` (step or None), ``seconds``.
  """
  mesh = data_mesh() if mesh is None else mesh
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Copy before placing: the step donates its params, and the caller's arrays must survive.
  params = jax.device_put(jax.tree.map(jnp.copy, params), replicated)
  opt_state = jax.device_put(optimizer.init(params), replicated)

  ckpt = _Checkpoints(config.checkpoint_dir, config.checkpoint_every, config.max_to_keep)
  start, resumed_from = 0, ckpt.latest_step()
  if resumed_from is not None:
    state = ckpt.restore(resumed_from, {"params": params, "opt_state": opt_state,
                                        "loss": jax.device_put(jnp.zeros((), jnp.float32),
                                                               replicated)})
    params, opt_state, start = state["params"], state["opt_state"], resumed_from
    restored_loss = float(state["loss"])
    logging.info("%s: resumed from checkpoint at step %d", config.name, start)

  first = batch_at(start)
  step_fn = _jitted_step(loss_fn, optimizer, mesh)
  batch_size = int(jax.tree.leaves(first)[0].shape[0])

  history = {"loss": [], "logged_steps": [], "resumed_from": resumed_from}
  t0 = t_log = time.perf_counter()
  last_logged = start
  try:
    for step in range(start, config.steps):
      batch = first if step == start else batch_at(step)
      params, opt_state, loss, aux = step_fn(params, opt_state, batch, jax.random.fold_in(rng, step))
      done = step + 1
      if done % config.log_every == 0 or done == config.steps:
        loss = float(loss)
        if not np.isfinite(loss):
          raise FloatingPointError(f"{config.name}: loss is {loss} at step {done}; training stopped "
                                   "(lower the learning rate); checkpoints up to step "
                                   f"{ckpt.latest_step()} are kept")
        now = time.perf_counter()
        rate = (done - last_logged) * batch_size / max(now - t_log, 1e-9)
        eta = (config.steps - done) * batch_size / max(rate, 1e-9)
        extra = " ".join(f"{k}={float(v):.4g}" for k, v in aux.items())
        logging.info("%s step %d/%d loss=%.4f %s %.0f ex/s ETA %.0fs", config.name, done,
                     config.steps, loss, extra, rate, eta)
        history["loss"].append(loss)
        history["logged_steps"].append(done)
        t_log, last_logged = now, done
      if done % config.checkpoint_every == 0 or done == config.steps:
        if not np.isfinite(float(loss)):
          raise FloatingPointError(f"{config.name}: loss is {float(loss)} at step {done}; "
                                   "training stopped before saving")
        ckpt.save(done, {"params": params, "opt_state": opt_state,
                         "loss": jnp.asarray(loss, jnp.float32)}, force=done == config.steps)
  finally:
    ckpt.close()
  if resumed_from == config.steps:      # finished before: report the loss it finished with
    history["loss"], history["logged_steps"] = [restored_loss], [config.steps]
  history["steps_run"] = config.steps - start
  history["seconds"] = time.perf_counter() - t0
  return params, history


def cross_entropy(logits_NK, labels_N, mask_N=None):
  losses = optax.softmax_cross_entropy_with_integer_labels(logits_NK, labels_N)
  if mask_N is None:
    return losses.mean()
  mask_N = mask_N.astype(losses.dtype)
  return (losses * mask_N).sum() / jnp.maximum(mask_N.sum(), 1.0)
