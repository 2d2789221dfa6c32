"""Meshes, batch placement, and the two ways of running one per-device loss: shard_map and pmap.

A per-device loss is a function ``fn(*args, axis_name=...)`` whose *sharded* arguments hold this
device's rows and whose other arguments are replicated, and which returns the global loss (equal on
every device), e.g. ``invariance.contrastive.clip_loss``. The same ``fn`` runs under
``shard_map_loss`` (the primary path: a ``("data",)`` mesh) and under ``pmap_loss`` /
``pmap_value_and_grad``.

Gradient conventions (checked in tests/test_parallel.py and tests/test_contrastive.py):
  * shard_map: ``jax.grad(shard_map_loss(fn, mesh))`` is the single-device gradient, for sharded
    and replicated arguments alike.
  * pmap: differentiating inside ``pmap`` seeds a cotangent of 1 on every device's copy of the
    loss, so it computes the gradient of D x loss. ``pmap_value_and_grad`` divides by D: sharded
    gradients are divided by D, replicated ones are summed over devices and divided by D (pmean).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Hashable, Optional, Sequence

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


# -- meshes and placement -----------------------------------------------------------------------
def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D ``("data",)`` mesh (Auto axis type) over ``devices`` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError("devices=[] is empty; pass None (all devices) or at least one device.")
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def _check_leading(tree: Any, n: int, what: str) -> None:
  for leaf in jax.tree.leaves(tree):
    if np.ndim(leaf) == 0 or np.shape(leaf)[0] % n:
      raise ValueError(f"{what}: leading axis of shape {np.shape(leaf)} must be divisible by "
                       f"the number of devices {n}.")


def shard_batch(tree: Any, mesh: Mesh) -> Any:
  """Every leaf placed with its leading (batch) axis split across ``"data"``."""
  _check_leading(tree, mesh.shape[DATA_AXIS], "shard_batch")
  return jax.device_put(tree, NamedSharding(mesh, P(DATA_AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf replicated on every device of ``mesh``."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def pmap_shard(tree: Any, n: int) -> Any:
  """Leading axis B reshaped to (n, B/n, ...), the layout ``jax.pmap`` maps over."""
  _check_leading(tree, n, "pmap_shard")
  return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), tree)


# -- running one per-device loss under shard_map or pmap ----------------------------------------
def shard_map_loss(fn: Callable[..., jax.Array], mesh: Mesh, *,
                   sharded_argnums: Sequence[int] = (0, 1),
                   axis_name: Hashable = DATA_AXIS) -> Callable[..., jax.Array]:
  """``fn`` over ``mesh``: global arrays in (``sharded_argnums`` split on their leading axis, the
  rest replicated), the global scalar loss out. Differentiable from outside; jit it as you like."""
  per_device = functools.partial(fn, axis_name=axis_name)
  cache: Dict[int, Callable[..., jax.Array]] = {}

  def wrapped(*args):
    if len(args) not in cache:
      specs = tuple(P(axis_name) if i in sharded_argnums else P() for i in range(len(args)))
      cache[len(args)] = jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P())
    return cache[len(args)](*args)

  return wrapped


def _pmapped(body: Callable[..., Any], sharded_argnums: Sequence[int],
             axis_name: Hashable) -> Callable[..., Any]:
  cache: Dict[int, Callable[..., Any]] = {}

  def wrapped(*args):
    if len(args) not in cache:
      in_axes = tuple(0 if i in sharded_argnums else None for i in range(len(args)))
      cache[len(args)] = jax.pmap(body, axis_name=axis_name, in_axes=in_axes)
    return cache[len(args)](*args)

  return wrapped


def pmap_loss(fn: Callable[..., jax.Array], *, sharded_argnums: Sequence[int] = (0, 1),
              axis_name: Hashable = DATA_AXIS) -> Callable[..., jax.Array]:
  """``fn`` under ``jax.pmap``: sharded arguments laid out by ``pmap_shard``, the rest passed
  as is (broadcast). Returns the loss per device, shape (D,), all entries equal."""
  return _pmapped(functools.partial(fn, axis_name=axis_name), sharded_argnums, axis_name)


def pmap_value_and_grad(fn: Callable[..., jax.Array], *, argnums: Sequence[int] = (0,),
                        sharded_argnums: Sequence[int] = (0, 1),
                        axis_name: Hashable = DATA_AXIS) -> Callable[..., Any]:
  """``(loss, grads)`` of ``fn`` under ``jax.pmap``, with the single-device gradient convention.

  ``grads`` is a tuple over ``argnums``; a sharded argument's gradient keeps its (D, B/D, ...)
  layout, a replicated one comes back once per device, shape (D, ...), all rows equal.
  """
  argnums = tuple(argnums)

  def body(*args):
    loss, grads = jax.value_and_grad(functools.partial(fn, axis_name=axis_name),
                                     argnums=argnums)(*args)
    # pmap differentiated D x loss (one unit cotangent per device copy of the global loss).
    n_dev = lax.axis_size(axis_name)
    grads = tuple(
        jax.tree.map(lambda g: g / n_dev, g) if i in sharded_argnums
        else jax.tree.map(lambda g: lax.pmean(g, axis_name), g)
        for i, g in zip(argnums, grads))
    return loss, grads

  return _pmapped(body, sharded_argnums, axis_name)


# -- multi-host ---------------------------------------------------------------------------------
def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, **options) -> None:
  """``jax.distributed.initialize`` with the given arguments; those left None are auto-detected
  (SLURM, Open MPI, Cloud TPU, ...). ``options`` are passed on (e.g. heartbeat_timeout_seconds:
  after that long without a peer's heartbeat, JAX terminates every surviving process with
  "another task died" instead of letting it wait in a collective forever). Call once per
  process, before any other JAX call."""
  given = dict(coordinator_address=coordinator_address, num_processes=num_processes,
               process_id=process_id, **options)
  jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})


def process_info() -> Dict[str, int]:
  """Where this process sits: its index and count, and local / global device counts."""
  return dict(process_index=jax.process_index(), process_count=jax.process_count(),
              local_device_count=jax.local_device_count(), device_count=jax.device_count())
