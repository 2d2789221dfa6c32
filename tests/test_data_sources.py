"""Sources: labelled images by name through TFDS (digits built locally, mnist mocked), objects'
size and channels, and one-line errors that say what to do, with nothing written."""
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
from invariance.data import sources  # noqa: E402  (after the importorskip)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One TFDS directory for the module: the digits are built into it once."""
  return str(tmp_path_factory.mktemp("tfds"))


def _sklearn_digits(seed, test_fraction=0.25):
  """The loader before TFDS (sklearn's arrays split in memory): the reference."""
  from sklearn import datasets, model_selection
  digits = datasets.load_digits()
  images = (digits.images[..., None] / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  return model_selection.train_test_split(images, labels, test_size=test_fraction,
                                          random_state=seed, stratify=labels)


def _files(root):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("seed, test_fraction", [(0, 0.25), (3, 0.25), (1, 0.5)])
def test_digits_through_tfds_equal_the_sklearn_arrays(data_dir, seed, test_fraction):
  d = sources.load_classification("digits", data_dir=data_dir, seed=seed,
                                  test_fraction=test_fraction)
  x_tr, x_te, y_tr, y_te = _sklearn_digits(seed, test_fraction)
  for got, want in ((d.train_images, x_tr), (d.test_images, x_te), (d.train_labels, y_tr),
                    (d.test_labels, y_te)):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()                          # bit for bit
  assert d.num_classes == 10 and d.name == "digits" and d.image_shape == (8, 8, 1)
  assert d.rotation_ambiguous == (6, 9)


def test_digits_are_a_tfds_dataset_built_once(data_dir):
  sources.load_classification("digits", data_dir=data_dir)
  before = _files(data_dir)
  assert any("sklearn_digits" in f and "array_record" in f for f in before)
  again = sources.load_classification("digits", data_dir=data_dir, seed=4)
  assert _files(data_dir) == before                                 # reused, nothing rewritten
  source = tfds.data_source("sklearn_digits", split="train", data_dir=data_dir, download=False)
  assert len(source) == 1797 == len(again.train_labels) + len(again.test_labels)
  record = source[0]                                                # plain TFDS reads it too
  assert record["image"].shape == (8, 8, 1) and record["image"].dtype == np.float32


def test_mnist_by_name_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=24):
    d = sources.load_classification("mnist", data_dir=tmp_path)
    small = sources.load_classification("mnist", data_dir=tmp_path, limit=5)
  assert d.train_images.shape == d.test_images.shape == (24, 28, 28, 1)
  assert d.train_images.dtype == np.float32 and d.train_labels.dtype == np.int32
  assert 0.0 <= d.train_images.min() and d.train_images.max() <= 1.0
  assert d.train_images.max() > 0.5                                 # uint8 / 255, not / 255**2
  assert d.num_classes == 10 and set(d.train_labels.tolist()) <= set(range(10))
  assert d.name == "mnist" and d.rotation_ambiguous == (6, 9)
  assert small.train_images.shape == (5, 28, 28, 1)
  objects = sources.as_objects(d, 8, 1)
  assert objects.train_images.shape == objects.test_images.shape == (24, 8, 8, 1)
  assert objects.train_labels is d.train_labels and objects.num_classes == 10
  assert os.listdir(tmp_path) == []


def test_cifar10_in_colour_or_grey_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    d = sources.load_classification("cifar10", data_dir=tmp_path)
  assert d.image_shape == (32, 32, 3) and d.rotation_ambiguous == ()
  colour = sources.as_objects(d, 32, 3)
  np.testing.assert_array_equal(colour.train_images, d.train_images)   # already that: unchanged
  grey = sources.as_objects(d, 32, 1)
  np.testing.assert_allclose(grey.train_images[..., 0], d.train_images @ sources.LUMINANCE,
                             atol=1e-6)


def test_resize_objects_sizes_channels_and_range():
  rng = np.random.default_rng(0)
  x = rng.random((5, 28, 28, 1), np.float32)
  small = sources.resize_objects(x, 8, 1)
  assert small.shape == (5, 8, 8, 1) and small.dtype == np.float32
  assert 0.0 <= small.min() and small.max() <= 1.0
  np.testing.assert_allclose(small.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=0.03)
  const = np.full((2, 28, 28, 1), 0.25, np.float32)
  for size in (8, 40):                                              # shrink and enlarge
    np.testing.assert_allclose(sources.resize_objects(const, size, 1), 0.25, atol=1e-6)
  colour = sources.resize_objects(x, 8, 3)                          # grey asked for 3 channels
  assert colour.shape == (5, 8, 8, 3)
  np.testing.assert_array_equal(colour, np.repeat(small, 3, axis=-1))
  rgb = np.broadcast_to(np.array([1.0, 0.5, 0.0], np.float32), (1, 4, 4, 3))
  np.testing.assert_allclose(sources.resize_objects(rgb, 4, 1), 0.299 + 0.5 * 0.587, atol=1e-6)
  np.testing.assert_array_equal(sources.resize_objects(x, 28, 1), x)   # nothing to do


@pytest.mark.parametrize("kwargs, arg", [
    (dict(object_size=0, channels=1), "object_size"),
    (dict(object_size=8, channels=2), "channels"),
    (dict(object_size=8, channels=True), "channels"),
])
def test_resize_objects_bad_input(kwargs, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}="):
    sources.resize_objects(np.zeros((1, 4, 4, 1), np.float32), **kwargs)


def test_resize_objects_refuses_four_channels():
  with pytest.raises(ValueError, match="4 channels"):
    sources.resize_objects(np.zeros((1, 4, 4, 4), np.float32), 4, 3)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "emnist/balanced", "cifar10:3.0.2"])
def test_unprepared_dataset_one_line_says_how_to_prepare(tmp_path, name):
  with pytest.raises(FileNotFoundError) as err:
    sources.load_classification(name, data_dir=tmp_path)
  message = str(err.value)
  assert "\n" not in message and "not prepared" in message
  assert repr(name) in message and str(tmp_path) in message
  assert f"tfds build {name} --data_dir={tmp_path} --file_format=array_record" in message
  assert os.listdir(tmp_path) == []                                 # nothing downloaded or written


@pytest.mark.parametrize("kwargs, arg", [
    (dict(name="no_such_dataset_xyz"), "name"),
    (dict(name="mnist/no_such_config"), "name"),
    (dict(name=""), "name"),
    (dict(name="digits", seed=-1), "seed"),
    (dict(name="digits", seed=1.5), "seed"),
    (dict(name="digits", test_fraction=0.0), "test_fraction"),
    (dict(name="digits", test_fraction=1.5), "test_fraction"),
    (dict(name="mnist", limit=0), "limit"),
    (dict(name="mnist", train_split=""), "train_split"),
    (dict(name="mnist", image_key="pixels"), "image_key"),
])
def test_bad_input_one_line_naming_the_argument(tmp_path, kwargs, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}=") as err:
    sources.load_classification(data_dir=tmp_path, **kwargs)
  assert "\n" not in str(err.value)
  assert os.listdir(tmp_path) == []


def test_to_unit_float():
  x = np.array([[[0, 255], [51, 102]]], np.uint8)
  y = sources.to_unit_float(x)
  assert y.shape == (1, 2, 2, 1) and y.dtype == np.float32
  np.testing.assert_allclose(y[..., 0], x / 255.0)
  with pytest.raises(ValueError, match="dtype"):
    sources.to_unit_float(np.zeros((1, 2, 2, 1), np.int64))
