"""grain loaders: disjoint covering shards, seeded shuffles, masked eval padding, bad input."""
import numpy as np
import pytest

from invariance.data import curation, pipeline


def _arrays(n):
  return {"id": np.arange(n), "images": np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1)}


@pytest.mark.parametrize("n, count", [(10, 1), (10, 3), (17, 8), (8, 8)])
def test_shards_disjoint_and_cover(n, count):
  shards = [pipeline.shard_indices(n, i, count) for i in range(count)]
  joined = np.concatenate(shards)
  assert len(joined) == n and set(joined.tolist()) == set(range(n))
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("n, count, batch", [(20, 1, 4), (23, 3, 5), (17, 8, 3)])
def test_train_first_epoch_of_each_process_covers_its_shard(n, count, batch):
  seen = []
  for i in range(count):
    it = pipeline.train_batches(_arrays(n), batch, seed=0, process_index=i, process_count=count)
    shard = pipeline.shard_indices(n, i, count)
    stream = np.concatenate([next(it)["id"] for _ in range(-(-3 * len(shard) // batch))])
    epochs = [stream[e * len(shard):(e + 1) * len(shard)] for e in range(3)]
    for epoch in epochs:                                 # each epoch is a permutation of the shard
      assert sorted(epoch.tolist()) == shard.tolist()
    assert any(not np.array_equal(epochs[0], e) for e in epochs[1:]) or len(shard) < 3
    seen.append(epochs[0])
  joined = np.concatenate(seen)
  assert sorted(joined.tolist()) == list(range(n))       # disjoint shards covering the data


def test_train_batches_contents_determinism_and_resume():
  arrays = _arrays(50)
  it = pipeline.train_batches(arrays, 8, seed=3)
  b = next(it)
  assert set(b) == {"id", "images"} and b["images"].shape == (8, 2, 2, 1)
  np.testing.assert_array_equal(b["images"], arrays["images"][b["id"]])
  first = [b["id"]] + [next(it)["id"] for _ in range(20)]
  again = pipeline.train_batches(arrays, 8, seed=3)
  assert all(np.array_equal(x, next(again)["id"]) for x in first)
  other = pipeline.train_batches(arrays, 8, seed=4)
  assert not all(np.array_equal(x, next(other)["id"]) for x in first)
  state = it.get_state()
  expected = [next(it)["id"] for _ in range(3)]
  it.set_state(state)
  assert all(np.array_equal(x, next(it)["id"]) for x in expected)


def test_batch_larger_than_shard():
  it = pipeline.train_batches(_arrays(5), 12, seed=0)
  ids = next(it)["id"]
  assert len(ids) == 12 and set(ids.tolist()) == set(range(5))


@pytest.mark.parametrize("n, count, batch", [(10, 1, 4), (10, 3, 4), (17, 8, 2), (3, 4, 5)])
def test_eval_padding_and_mask(n, count, batch):
  arrays = _arrays(n)
  expected_batches = pipeline.num_eval_batches(n, batch, count)
  real = []
  for i in range(count):
    ds = pipeline.eval_batches(arrays, batch, i, count)
    batches = list(ds)
    assert len(batches) == expected_batches                # every process runs the same steps
    assert len(list(ds)) == expected_batches               # and can run them again
    for b in batches:
      assert set(b) == {"id", "images", "mask"} and b["mask"].dtype == bool
      assert all(v.shape[0] == batch for v in b.values())
      assert (b["id"][~b["mask"]] == 0).all() and (b["images"][~b["mask"]] == 0).all()
      np.testing.assert_array_equal(b["images"][b["mask"]], arrays["images"][b["id"][b["mask"]]])
      real.append(b["id"][b["mask"]])
  joined = np.concatenate(real)
  assert sorted(joined.tolist()) == list(range(n))        # every example exactly once


def test_curated_splits_feed_the_pipeline():
  glyphs = np.ones((30, 8, 8, 1), np.float32)
  splits = curation.curated_splits(glyphs, np.arange(30) % 10, glyphs[:9], np.arange(9),
                                   (24, 24), "bottom", np.random.default_rng(0))
  b = next(pipeline.train_batches(splits["train"], 4, seed=0))
  assert b["images"].shape == (4, 24, 24, 1) and b["positions"].shape == (4, 2)
  assert sum(e["mask"].sum() for e in pipeline.eval_batches(splits["test_out"], 4)) == 9


@pytest.mark.parametrize("call, arg", [
    (lambda: pipeline.train_batches(_arrays(10), 0, seed=0), "batch_size"),
    (lambda: pipeline.train_batches(_arrays(10), 4, seed=-1), "seed"),
    (lambda: pipeline.train_batches(_arrays(10), 4, 0, process_index=3, process_count=3),
     "process_index"),
    (lambda: pipeline.train_batches(_arrays(10), 4, 0, process_index=0, process_count=0),
     "process_count"),
    (lambda: pipeline.train_batches(_arrays(3), 4, 0, process_index=0, process_count=4),
     "process_count"),
    (lambda: pipeline.train_batches({"a": np.zeros(3), "b": np.zeros(4)}, 2, 0), "arrays"),
    (lambda: pipeline.train_batches({}, 2, 0), "arrays"),
    (lambda: pipeline.eval_batches({"mask": np.zeros(3)}, 2), "arrays"),
    (lambda: pipeline.eval_batches(_arrays(10), 2.0), "batch_size"),
    (lambda: pipeline.eval_batches(_arrays(10), 2, process_index=-1), "process_index"),
])
def test_bad_input_names_the_argument(call, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    call()
