"""Base sources: offline digits, dispatch, and TFDS errors that say what to do."""
import numpy as np
import pytest

from invariance.data import sources


def test_digits_shapes_range_and_split():
  d = sources.load_digits(seed=0)
  assert d.train_images.shape[1:] == (8, 8, 1) and d.train_images.dtype == np.float32
  assert d.train_labels.dtype == np.int32 and d.test_labels.dtype == np.int32
  assert 0.0 <= d.train_images.min() and d.train_images.max() <= 1.0
  assert len(d.train_images) + len(d.test_images) == 1797
  assert len(d.test_images) == pytest.approx(0.25 * 1797, abs=1)
  assert set(np.unique(d.train_labels)) == set(range(10)) == set(np.unique(d.test_labels))
  assert d.num_classes == 10 and d.image_shape == (8, 8, 1)


def test_digits_split_fixed_by_seed():
  a, b, c = sources.load_digits(seed=3), sources.load_digits(seed=3), sources.load_digits(seed=4)
  assert a.train_images.tobytes() == b.train_images.tobytes()
  assert a.test_labels.tobytes() == b.test_labels.tobytes()
  assert a.train_images.tobytes() != c.train_images.tobytes()


def test_load_source_dispatch():
  d = sources.load_source("digits", seed=1)
  assert d.name == "digits"
  assert d.train_images.tobytes() == sources.load_digits(seed=1).train_images.tobytes()


@pytest.mark.parametrize("kwargs, arg", [
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(test_fraction=0.0), "test_fraction"),
    (dict(test_fraction=1.5), "test_fraction"),
])
def test_digits_bad_input(kwargs, arg):
  with pytest.raises(ValueError, match=f"{arg}="):
    sources.load_digits(**kwargs)


@pytest.mark.parametrize("name", ["mnist_offline", "tfds:", "", "cifar"])
def test_unknown_source_lists_allowed(name):
  with pytest.raises(ValueError, match=r"name=.*allowed: digits, tfds:<name>"):
    sources.load_source(name)


def test_to_unit_float():
  x = np.array([[[0, 255], [51, 102]]], np.uint8)
  y = sources.to_unit_float(x)
  assert y.shape == (1, 2, 2, 1) and y.dtype == np.float32
  np.testing.assert_allclose(y[..., 0], x / 255.0)
  with pytest.raises(ValueError, match="dtype"):
    sources.to_unit_float(np.zeros((1, 2, 2, 1), np.int64))
