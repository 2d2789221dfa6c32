"""TFDS: the project's datasets build offline (array_record, no TensorFlow) and read back."""
import io
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
from invariance.data import sources, tfds_builders  # noqa: E402  (after the importorskip)


def _by_index(records):
  return sorted(records, key=lambda r: int(r["index"]))


def test_dashcam_round_trip(tmp_path):
  config = tfds_builders.DashcamScenesConfig(name="tiny", num_train=40, num_test=12, seed=5)
  builder = tfds_builders.build("dashcam_scenes", tmp_path, config)
  assert builder.info.file_format.value == "array_record"
  for split, n in (("train", 40), ("test", 12)):
    source = tfds.data_source("dashcam_scenes/tiny", split=split, data_dir=tmp_path,
                              download=False)
    records = _by_index(source.__getitems__(range(len(source))))
    expected = tfds_builders.dashcam_split(config, split)
    assert len(records) == n
    np.testing.assert_array_equal(np.stack([r["image"] for r in records]), expected["image"])
    for key in ("car_color", "light", "pedestrian", "clouds"):
      np.testing.assert_array_equal([r[key] for r in records], expected[key])
    for key in ("caption_salient", "caption_full"):
      assert [r[key].decode() for r in records] == expected[key].tolist()


def test_placed_digits_round_trip_through_load_tfds(tmp_path):
  config = tfds_builders.PlacedDigitsConfig(name="tiny", support="left", max_examples=24)
  tfds_builders.build("placed_digits", tmp_path, config)
  expected = tfds_builders.placed_digits_splits(config)
  for split in ("train", "test_in", "test_out"):
    features = sources.read_tfds("placed_digits/tiny", split, tmp_path)
    order = np.argsort(features["index"])
    np.testing.assert_array_equal(features["image"][order], expected[split]["image"])
    np.testing.assert_array_equal(features["position"][order], expected[split]["position"])
    images, labels = sources.load_tfds("placed_digits/tiny", split, tmp_path, limit=5)
    assert images.shape == (5, 24, 24, 1) and images.dtype == np.float32 and labels.shape == (5,)
  assert (expected["test_out"]["position"][:, 1] >= 12).all()    # complement of "left"


def test_build_is_cached(tmp_path):
  config = tfds_builders.DashcamScenesConfig(name="cached", num_train=8, num_test=4)
  b = tfds_builders.build("dashcam_scenes", tmp_path, config)
  files = sorted(p for p in os.listdir(b.data_dir))
  stamps = [os.stat(os.path.join(b.data_dir, f)).st_mtime_ns for f in files]
  again = tfds_builders.build("dashcam_scenes", tmp_path, config)
  assert sorted(os.listdir(again.data_dir)) == files
  assert [os.stat(os.path.join(b.data_dir, f)).st_mtime_ns for f in files] == stamps


class PngDigits(tfds_builders.ArrayRecordBuilder):
  """An mnist-like dataset with PNG-encoded uint8 ``image``s (what a prepared TFDS mnist holds)."""

  def _info(self):
    return self._info_from({"image": tfds.features.Image(shape=(8, 8, 1)),
                            "label": tfds.features.ClassLabel(num_classes=10)}, "png digits")

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    from PIL import Image  # encode without TensorFlow
    for i, image in enumerate(_png_images()):
      buffer = io.BytesIO()
      Image.fromarray(image[..., 0]).save(buffer, format="png")
      yield i, {"image": buffer.getvalue(), "label": i % 10}


def _png_images():
  return np.random.default_rng(0).integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)


def test_load_tfds_normalises_uint8_images(tmp_path):
  pytest.importorskip("PIL")
  builder = PngDigits(data_dir=tmp_path)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  images, labels = sources.load_tfds("png_digits", "train", tmp_path)
  assert images.shape == (12, 8, 8, 1) and images.dtype == np.float32 and labels.dtype == np.int32
  expected = _png_images().astype(np.float32) / 255.0            # records come back shuffled:
  assert {x.tobytes() for x in images} == {x.tobytes() for x in expected}   # match by content


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    sources.load_tfds("mnist", "train", data_dir=tmp_path)
  message = str(err.value)
  assert "\n" not in message and "not prepared" in message
  assert "tfds build mnist" in message and "--file_format=array_record" in message
  assert os.listdir(tmp_path) == []                               # nothing downloaded or written
  with pytest.raises(FileNotFoundError, match="tfds build mnist"):
    sources.load_source("tfds:mnist", data_dir=tmp_path)


def test_unbuilt_generated_dataset_says_how_to_build(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"tfds_builders\.build\('dashcam_scenes'"):
    sources.load_tfds("dashcam_scenes", "train", tmp_path)
  with pytest.raises(ValueError, match=r"name='dashcam_scenes/nope'") as err:
    sources.load_tfds("dashcam_scenes/nope", "train", tmp_path)
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("call, arg", [
    (lambda d: sources.load_tfds("no_such_dataset_xyz", "train", d), "name"),
    (lambda d: sources.load_tfds("mnist", "", d), "split"),
    (lambda d: sources.load_tfds("mnist", "train", d, limit=0), "limit"),
    (lambda d: tfds_builders.build("imagenet", d), "name"),
    (lambda d: tfds_builders.build("placed_digits", d, "sideways_24"), "config"),
    (lambda d: tfds_builders.build("placed_digits", None), "data_dir"),
    (lambda d: tfds_builders.build("placed_digits", d, tfds_builders.DashcamScenesConfig("x")),
     "config"),
])
def test_bad_input_names_the_argument(tmp_path, call, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    call(tmp_path)
  assert os.listdir(tmp_path) == []


def test_bad_split_and_feature_keys(tmp_path):
  config = tfds_builders.DashcamScenesConfig(name="keys", num_train=4, num_test=4)
  tfds_builders.build("dashcam_scenes", tmp_path, config)
  with pytest.raises(ValueError, match=r"split='validation'.*allowed: test, train"):
    sources.load_tfds("dashcam_scenes/keys", "validation", tmp_path)
  with pytest.raises(ValueError, match=r"label_key='label'.*car_color"):
    sources.load_tfds("dashcam_scenes/keys", "train", tmp_path)
  images, lights = sources.load_tfds("dashcam_scenes/keys", "train", tmp_path, label_key="light")
  assert images.shape == (4, 32, 32, 3) and set(lights.tolist()) <= {0, 1}
