"""TFDS builders: the offline datasets build locally (array_record, no TensorFlow), once, and read
back exactly what the generators make; a prepared image dataset of any name reads back."""
import ast
import io
import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
from invariance.data import scenes, sources, tfds_builders  # noqa: E402  (after the importorskip)


def _files(root):
  return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("seed, rng_seed", [((3, 1), [3, 1]), (5, 5)])
def test_scenes_equal_the_generator(tmp_path, seed, rng_seed):
  images, attrs = sources.load_scenes(24, seed, data_dir=tmp_path)
  want_images, want_attrs, _ = scenes.make_scenes(24, np.random.default_rng(rng_seed), 32)
  assert images.dtype == want_images.dtype and images.tobytes() == want_images.tobytes()
  assert set(attrs) == set(want_attrs)
  for k, v in want_attrs.items():
    assert attrs[k].dtype == v.dtype and np.array_equal(attrs[k], v)


def test_scene_pairs_equal_the_generator(tmp_path):
  got = sources.load_scene_pairs(10, "light", (2, 3, 1), size=40, data_dir=tmp_path)
  want = scenes.scene_pairs(10, "light", np.random.default_rng([2, 3, 1]), 40)
  for g, w in zip(got[:2], want[:2]):
    assert g.shape == (10, 40, 40, 3) and g.tobytes() == w.tobytes()
  for g, w in zip(got[2:], want[2:4]):
    assert set(g) == set(w) and all(np.array_equal(g[k], w[k]) for k in w)
  assert (got[2]["light"] != got[3]["light"]).all()


def test_scenes_config_is_the_generators_parameters_built_once(tmp_path):
  config = tfds_builders.ScenesConfig(num_scenes=12, seed=(7, 0), size=32)
  assert config.name == f"n12_s32_seed7-0_g{tfds_builders.generator_fingerprint()}"
  assert tfds_builders.ScenesConfig(12, 7).name != tfds_builders.ScenesConfig(12, (7, 0)).name
  assert tfds_builders.ScenesConfig(12, 7, attribute="clouds").name.startswith("pairs_clouds_")
  images, _ = sources.load_scenes(12, (7, 0), data_dir=tmp_path)
  before = _files(tmp_path)
  assert any(config.name in f and "array_record" in f for f in before)
  again, _ = sources.load_scenes(12, (7, 0), data_dir=tmp_path)
  assert _files(tmp_path) == before and again.tobytes() == images.tobytes()   # reused
  source = tfds.data_source(f"dashcam_scenes/{config.name}", split="train", data_dir=tmp_path,
                            download=False)                # plain TFDS reads it, in order
  assert len(source) == 12
  np.testing.assert_array_equal(source[3]["image"], images[3])


@pytest.mark.parametrize("kwargs, arg", [
    (dict(num_scenes=0), "num_scenes"),
    (dict(num_scenes=4, seed=-1), "seed"),
    (dict(num_scenes=4, seed=()), "seed"),
    (dict(num_scenes=4, seed="a"), "seed"),
    (dict(num_scenes=4, size=16), "size"),
    (dict(num_scenes=4, attribute="weather"), "attribute"),
])
def test_bad_scenes_config_names_the_argument(kwargs, arg):
  with pytest.raises(ValueError, match=rf"\b{arg}="):
    tfds_builders.ScenesConfig(**kwargs)


def test_bad_scene_arguments_write_nothing(tmp_path):
  with pytest.raises(ValueError, match=r"\bnum_scenes="):
    sources.load_scenes(0, 1, data_dir=tmp_path)
  with pytest.raises(ValueError, match=r"\battribute="):
    sources.load_scene_pairs(4, "weather", 1, data_dir=tmp_path)
  with pytest.raises(ValueError, match=r"\bname="):
    tfds_builders.builder("imagenet", tmp_path)
  assert os.listdir(tmp_path) == []


class PngDigits(tfds_builders.ArrayRecordBuilder):
  """An mnist-like dataset with PNG-encoded uint8 ``image``s (what a prepared TFDS mnist holds)."""

  name = "png_digits"

  def _info(self):
    return self._info_from({"image": tfds.features.Image(shape=(8, 8, 1)),
                            "label": tfds.features.ClassLabel(num_classes=10)}, "png digits")

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in ("train", "test")}

  def _generate_examples(self, split):
    from PIL import Image  # encode without TensorFlow
    for i, image in enumerate(_png_images()[:8 if split == "train" else 4]):
      buffer = io.BytesIO()
      Image.fromarray(image[..., 0]).save(buffer, format="png")
      yield i, {"image": buffer.getvalue(), "label": i % 10}


def _png_images():
  return np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)


def test_any_prepared_image_dataset_by_name(tmp_path):
  """A dataset prepared into data_dir (e.g. copied from a machine with internet) reads back."""
  pytest.importorskip("PIL")
  tfds_builders.prepare(PngDigits(data_dir=tmp_path))
  d = sources.load_classification("png_digits", data_dir=tmp_path)
  assert d.train_images.shape == (8, 8, 8, 1) and d.test_images.shape == (4, 8, 8, 1)
  assert d.train_images.dtype == np.float32 and d.num_classes == 10
  expected = _png_images().astype(np.float32) / 255.0
  np.testing.assert_array_equal(d.train_images, expected)          # in order, divided by 255
  np.testing.assert_array_equal(d.train_labels, np.arange(8) % 10)
  with pytest.raises(ValueError, match=r"split='validation'.*allowed: test, train") as err:
    sources.load_classification("png_digits", data_dir=tmp_path, test_split="validation")
  assert "\n" not in str(err.value)


def _module_imports(module) -> set:
  tree = ast.parse(open(module.__file__).read())
  names = set()
  for node in tree.body:                                            # module level only
    if isinstance(node, ast.ImportFrom):
      names |= {f"{node.module}.{a.name}" for a in node.names}
    elif isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
  return names


def test_no_import_cycle_between_sources_and_builders():
  assert not any("sources" in n for n in _module_imports(tfds_builders))
  assert not any("tfds_builders" in n or "tensorflow_datasets" in n
                 for n in _module_imports(sources))
