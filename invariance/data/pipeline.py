"""grain loaders over in-memory arrays: per-process shards, seeded shuffling, masked eval padding.

Data is a dict of numpy arrays sharing a leading dim N (e.g. ``images``, ``labels``). Process ``i``
of ``k`` owns the examples ``i, i + k, i + 2k, ...``: shards are disjoint and cover the data.
``batch_size`` is always the per-process batch. grain is imported lazily inside the functions.

* ``train_batches`` - infinite iterator; each epoch of the shard is reshuffled from ``seed``.
  Shuffling is done per epoch with numpy and batches are gathered in one vectorised take; grain
  provides the iterator (and its checkpointable state).
* ``eval_batches``  - finite; every process yields ``num_eval_batches(...)`` batches, padded with
  zero rows and a boolean ``mask`` (True = real example), so hosts stay in lock-step.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

MASK_KEY = "mask"


def _check_int(arg: str, value, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{arg}={value!r} is invalid; allowed: an int >= {low}")
  return int(value)


def _check_process(process_index, process_count) -> tuple[int, int]:
  process_count = _check_int("process_count", process_count, 1)
  process_index = _check_int("process_index", process_index, 0)
  if process_index >= process_count:
    raise ValueError(f"process_index={process_index} is invalid; allowed: an int in "
                     f"[0, process_count={process_count})")
  return process_index, process_count


def _check_arrays(arrays) -> dict[str, np.ndarray]:
  if not isinstance(arrays, dict) or not arrays:
    raise ValueError(f"arrays={type(arrays).__name__} is invalid; allowed: a non-empty dict of "
                     f"numpy arrays with a shared leading dim")
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1 or None in lengths.values() or 0 in lengths.values():
    raise ValueError(f"arrays have leading dims {lengths}; allowed: one shared leading dim >= 1")
  if MASK_KEY in arrays:
    raise ValueError(f"arrays has a key {MASK_KEY!r}; allowed: any other key (it is reserved for "
                     f"the eval padding mask)")
  return arrays


def shard_indices(num_examples: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """Example indices owned by one process: ``process_index::process_count`` (int64)."""
  num_examples = _check_int("num_examples", num_examples, 1)
  process_index, process_count = _check_process(process_index, process_count)
  return np.arange(num_examples)[process_index::process_count]


def num_eval_batches(num_examples: int, batch_size: int, process_count: int = 1) -> int:
  """Batches every process runs in ``eval_batches`` (set by the largest shard)."""
  num_examples = _check_int("num_examples", num_examples, 1)
  batch_size = _check_int("batch_size", batch_size, 1)
  process_count = _check_int("process_count", process_count, 1)
  return math.ceil(math.ceil(num_examples / process_count) / batch_size)


def _gather(arrays: dict[str, np.ndarray]):
  def gather(idx):
    idx = np.asarray(idx)
    mask = idx >= 0
    batch = {k: v[np.maximum(idx, 0)] for k, v in arrays.items()}
    if not mask.all():
      for v in batch.values():
        v[~mask] = np.zeros((), v.dtype)
    return batch, mask
  return gather


def _read_options():
  import grain  # pylint: disable=import-outside-toplevel
  # Batches are gathered from memory by one vectorised take: no reader threads (GIL contention).
  return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _over_steps(num_steps: int, batch_at):
  """grain dataset whose element ``step`` is ``batch_at(step)``, as a checkpointable IterDataset."""
  import grain  # pylint: disable=import-outside-toplevel
  return grain.MapDataset.range(num_steps).map(batch_at).to_iter_dataset(_read_options())


def epoch_order(shard, seed: int, process_index: int, epoch: int) -> np.ndarray:
  """The shard's examples in the order of one epoch (a permutation seeded by all three ints)."""
  return np.random.default_rng([seed, process_index, epoch]).permutation(shard)


def train_batch_fn(arrays: dict, batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1):
  """Random access to the training stream: ``batch_at(step)`` -> dict batch of this process.

  Step ``t`` takes positions ``[t * batch_size, (t + 1) * batch_size)`` of the endless stream
  ``epoch_order(shard, seed, process_index, 0) ++ epoch_order(..., 1) ++ ...`` (like grain's
  ``shuffle(seed).repeat().batch(batch_size)``, but one vectorised gather per batch instead of a
  Python call per example). Being a function of the step, it makes resumed training see exactly
  the batches an uninterrupted run sees (``train.fit`` takes it directly).
  """
  arrays = _check_arrays(arrays)
  batch_size = _check_int("batch_size", batch_size, 1)
  seed = _check_int("seed", seed, 0)
  n = len(next(iter(arrays.values())))
  process_index, process_count = _check_process(process_index, process_count)
  if n < process_count:
    raise ValueError(f"process_count={process_count} is larger than the {n} examples; allowed: "
                     f"process_count <= number of examples, so every shard is non-empty")
  shard = shard_indices(n, process_index, process_count)
  order = functools.lru_cache(maxsize=4)(
      lambda epoch: epoch_order(shard, seed, process_index, epoch))
  gather = _gather(arrays)

  def batch_at(step):
    epoch, offset = np.divmod(step * batch_size + np.arange(batch_size), len(shard))
    idx = np.empty(batch_size, np.int64)
    for e in np.unique(epoch):
      idx[epoch == e] = order(int(e))[offset[epoch == e]]
    return gather(idx)[0]

  return batch_at


def train_batches(arrays: dict, batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1):
  """Infinite grain iterator over ``train_batch_fn``'s stream (``get_state`` / ``set_state``)."""
  batch_at = train_batch_fn(arrays, batch_size, seed, process_index, process_count)
  return iter(_over_steps(sys.maxsize, batch_at))


def eval_batches(arrays: dict, batch_size: int, process_index: int = 0, process_count: int = 1):
  """Finite, re-iterable batches of this process's shard in order, padded with a ``mask``.

  Every process yields ``num_eval_batches(N, batch_size, process_count)`` batches of exactly
  ``batch_size`` rows; padding rows are zeros with ``mask == False``.
  """
  arrays = _check_arrays(arrays)
  batch_size = _check_int("batch_size", batch_size, 1)
  n = len(next(iter(arrays.values())))
  shard = shard_indices(n, process_index, process_count)
  num_batches = num_eval_batches(n, batch_size, process_count)
  padded = np.concatenate([shard, -np.ones(num_batches * batch_size - len(shard), shard.dtype)])
  gather = _gather(arrays)

  def batch_at(step):
    batch, mask = gather(padded[step * batch_size:(step + 1) * batch_size])
    return {**batch, MASK_KEY: mask}

  return _over_steps(num_batches, batch_at)
