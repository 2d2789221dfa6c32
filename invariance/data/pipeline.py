"""grain batches indexed by step: the global batch of every training step, by random access.

Data is a dict of numpy arrays sharing a leading dim N (e.g. ``images``, ``labels``), read from a
TFDS dataset and curated (``sources``, ``curation``). ``train_dataset`` is a grain ``MapDataset``
whose element ``step`` is the *global* batch of that step:

    MapDataset.range(N).shuffle(grain_seed(seed)).repeat(): example indices, endless, each
    epoch in its own order (grain's index shuffle)
    -> .batch(batch_size, batch_fn=gather): one vectorised take per key

so step ``t`` holds positions ``[t * batch_size, (t + 1) * batch_size)`` of the stream
``epoch 0 ++ epoch 1 ++ ...`` (a batch may straddle two epochs). ``train_batch_fn`` returns its
``__getitem__``, the ``batch_at(step)`` that ``train.fit`` takes: a pure function of (arrays,
batch_size, seed, step), so a resumed run sees exactly the batches an uninterrupted one sees, and
the batches do not depend on the number of processes. Multi-host: every process computes the same
global batch and ``train.fit`` copies each process's rows to its devices
(``jax.make_array_from_callback``); there is no per-process sharding here. grain is imported inside
the functions.
"""
from __future__ import annotations

import numpy as np

# A second word in the derivation of grain's seed: changing it changes every batch order.
_STREAM = 0
# How the batch order is made, recorded in every workdir's flags.json (a workdir whose rows were
# made with another order is refused on resume, not mixed).
BATCH_ORDER = "grain index shuffle"


def _check_int(arg: str, value, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{arg}={value!r} is invalid; allowed: an int >= {low}")
  return int(value)


def _check_arrays(arrays) -> dict[str, np.ndarray]:
  if not isinstance(arrays, dict) or not arrays:
    raise ValueError(f"arrays={type(arrays).__name__} is invalid; allowed: a non-empty dict of "
                     f"numpy arrays with a shared leading dim")
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  lengths = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1 or None in lengths.values() or 0 in lengths.values():
    raise ValueError(f"arrays have leading dims {lengths}; allowed: one shared leading dim >= 1")
  return arrays


def grain_seed(seed: int) -> int:
  """The 32-bit seed of grain's shuffle for a study's ``seed``. grain reshuffles epoch ``e`` with
  seed ``s + e``, so seeds 0, 1, 2... used as they are would share epochs (seed 1's first epoch
  would be seed 0's second); hashing them apart keeps every seed's batch order its own."""
  return int(np.random.SeedSequence([_check_int("seed", seed, 0), _STREAM]).generate_state(1)[0])


def example_indices(num_examples: int, seed: int):
  """grain ``MapDataset`` of the example indices 0..N-1 repeated endlessly, each epoch in its own
  order (``range(N).shuffle(...).repeat()``: grain's index shuffle, random access)."""
  import grain  # pylint: disable=import-outside-toplevel
  n = _check_int("num_examples", num_examples, 1)
  return grain.MapDataset.range(n).shuffle(seed=grain_seed(seed)).repeat()


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """int64 (N,): the example indices in the order of epoch ``epoch`` of ``example_indices``."""
  n, e = _check_int("num_examples", num_examples, 1), _check_int("epoch", epoch, 0)
  return example_indices(n, seed).batch(n, batch_fn=lambda i: np.asarray(i, np.int64))[e]


def train_dataset(arrays: dict, batch_size: int, seed: int):
  """grain ``MapDataset`` whose element ``step`` is the global batch of that step (a dict with
  the keys of ``arrays``, each with leading dim ``batch_size``); endless, random access."""
  arrays = _check_arrays(arrays)
  batch_size = _check_int("batch_size", batch_size, 1)
  seed = _check_int("seed", seed, 0)
  n = len(next(iter(arrays.values())))

  def gather(indices):
    idx = np.asarray(indices, np.int64)
    return {k: v[idx] for k, v in arrays.items()}

  return example_indices(n, seed).batch(batch_size, batch_fn=gather)


def train_batch_fn(arrays: dict, batch_size: int, seed: int):
  """``batch_at(step)`` -> the global batch of ``step`` (``train_dataset(...)[step]``), the
  random-access input ``train.fit`` takes."""
  dataset = train_dataset(arrays, batch_size, seed)

  def batch_at(step: int) -> dict[str, np.ndarray]:
    return dataset[_check_int("step", step, 0)]

  return batch_at


def visits(num_examples: int, batch_size: int, seed: int, steps: int) -> np.ndarray:
  """int64 (num_examples,): how many times each example is in the batches of steps
  ``0 .. steps - 1`` of ``train_dataset(..., batch_size, seed)`` (e.g. how many light-mentioning
  captions a run has seen), without building a batch."""
  n = _check_int("num_examples", num_examples, 1)
  total = _check_int("steps", steps, 0) * _check_int("batch_size", batch_size, 1)
  full, rest = divmod(total, n)
  counts = np.full(n, full, np.int64)
  np.add.at(counts, epoch_order(n, _check_int("seed", seed, 0), full)[:rest], 1)
  return counts
