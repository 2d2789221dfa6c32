"""grain batches by step: the global batch of every step, pinned order, random access (exact
resume), epochs that cover the data, bad input."""
import numpy as np
import pytest

grain = pytest.importorskip("grain")
from invariance.data import curation, pipeline  # noqa: E402  (after the importorskip)


def _arrays(n):
  return {"id": np.arange(n), "images": np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1)}


def _reference_ids(n, batch_size, seed, step):
  """The batch order computed directly from grain's index shuffle (a bijection of 0..n-1 per
  seed): positions [step * B, (step + 1) * B) of the stream of epochs, epoch e shuffled with seed
  (grain_seed(seed) + e) mod 2**32, 4 rounds, as grain's ShuffleMapDataset documents."""
  from grain.experimental import index_shuffle
  base = pipeline.grain_seed(seed)
  pos = step * batch_size + np.arange(batch_size)
  epoch, offset = np.divmod(pos, n)
  return np.array([index_shuffle(int(o), max_index=n - 1, seed=(base + int(e)) % 2**32, rounds=4)
                   for e, o in zip(epoch, offset)])


@pytest.mark.parametrize("n, batch, seed", [(50, 8, 3), (7, 12, 0), (10, 4, 1)])
def test_batches_follow_the_pinned_order(n, batch, seed):
  batch_at = pipeline.train_batch_fn(_arrays(n), batch, seed=seed)
  for step in list(range(12)) + [97, 1000]:                         # incl. batches across epochs
    np.testing.assert_array_equal(batch_at(step)["id"], _reference_ids(n, batch, seed, step))


def test_a_grain_map_dataset_indexed_by_step():
  arrays = _arrays(50)
  dataset = pipeline.train_dataset(arrays, 8, seed=3)
  assert isinstance(dataset, grain.MapDataset)
  batch_at = pipeline.train_batch_fn(arrays, 8, seed=3)
  for step in (0, 6, 7, 123):
    b = dataset[step]
    assert set(b) == {"id", "images"} and b["images"].shape == (8, 2, 2, 1)
    np.testing.assert_array_equal(b["images"], arrays["images"][b["id"]])
    np.testing.assert_array_equal(b["id"], batch_at(step)["id"])


def test_deterministic_random_access_and_exact_resume():
  arrays = _arrays(50)
  run = pipeline.train_batch_fn(arrays, 8, seed=3)
  stream = [run(s)["id"] for s in range(40)]
  resumed = pipeline.train_batch_fn(arrays, 8, seed=3)             # a restarted process
  for step in (25, 26, 39, 3, 0):                                   # any order: random access
    np.testing.assert_array_equal(resumed(step)["id"], stream[step])
  other = pipeline.train_batch_fn(arrays, 8, seed=4)
  assert not all(np.array_equal(other(s)["id"], stream[s]) for s in range(40))


@pytest.mark.parametrize("n, batch", [(20, 4), (23, 5), (17, 3)])
def test_each_epoch_is_a_permutation_reshuffled(n, batch):
  batch_at = pipeline.train_batch_fn(_arrays(n), batch, seed=0)
  stream = np.concatenate([batch_at(s)["id"] for s in range(-(-3 * n // batch))])
  epochs = [stream[e * n:(e + 1) * n] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch.tolist()) == list(range(n))
  assert not np.array_equal(epochs[0], epochs[1])


def test_consecutive_seeds_share_no_epoch():
  """grain reshuffles epoch e with seed s + e; the study seeds are hashed apart so seed 1's first
  epoch is not seed 0's second. Control: grain's shuffle seeded with the raw seeds shares it."""
  import grain
  n = 30
  for seed in range(4):
    assert not np.array_equal(pipeline.epoch_order(n, seed, 1), pipeline.epoch_order(n, seed + 1, 0))
  shuffled = lambda s: grain.MapDataset.range(n).shuffle(seed=s).repeat()
  raw = lambda s, e: np.array(list(shuffled(s)[e * n:(e + 1) * n]))
  np.testing.assert_array_equal(raw(0, 1), raw(1, 0))


@pytest.mark.parametrize("n, batch, steps", [(10, 3, 7), (10, 4, 5), (7, 16, 3), (5, 2, 0)])
def test_visits_count_what_the_batches_hold(n, batch, steps):
  batch_at = pipeline.train_batch_fn({"i": np.arange(n)}, batch, seed=3)
  seen = np.zeros(n, np.int64)
  for step in range(steps):
    np.add.at(seen, batch_at(step)["i"], 1)
  np.testing.assert_array_equal(pipeline.visits(n, batch, 3, steps), seen)
  if steps * batch % n:                          # control: other seeds visit other examples
    assert any((pipeline.visits(n, batch, s, steps) != seen).any() for s in range(4, 10))


def test_batch_larger_than_data():
  ids = pipeline.train_batch_fn(_arrays(5), 12, seed=0)(0)["id"]
  assert len(ids) == 12 and set(ids.tolist()) == set(range(5))


def test_curated_splits_feed_the_pipeline():
  glyphs = np.ones((30, 8, 8, 1), np.float32)
  splits = curation.curated_splits(glyphs, np.arange(30) % 10, glyphs[:9], np.arange(9),
                                   (24, 24), "bottom", np.random.default_rng(0))
  b = pipeline.train_batch_fn(splits["train"], 4, seed=0)(0)
  assert b["images"].shape == (4, 24, 24, 1) and b["positions"].shape == (4, 2)
  assert b["labels"].dtype == np.int32


@pytest.mark.parametrize("call, arg", [
    (lambda: pipeline.train_batch_fn(_arrays(10), 0, seed=0), "batch_size"),
    (lambda: pipeline.train_batch_fn(_arrays(10), 2.0, seed=0), "batch_size"),
    (lambda: pipeline.train_batch_fn(_arrays(10), 4, seed=-1), "seed"),
    (lambda: pipeline.train_batch_fn({"a": np.zeros(3), "b": np.zeros(4)}, 2, 0), "arrays"),
    (lambda: pipeline.train_batch_fn({}, 2, 0), "arrays"),
    (lambda: pipeline.train_batch_fn(_arrays(10), 2, 0)(-1), "step"),
])
def test_bad_input_names_the_argument(call, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    call()
