"""Caption statistics: hand-counted captions, box-area strata and corpus rates;
conditional rates on coco_captions through tfds.testing.mock_data (hand-made examples) and through
real array_record files read by the CLI; bad input failing in one line before any work.

TFDS's coco_captions code needs TensorFlow (absent here) to build its features, so the tests write
the dataset's metadata (dataset_info.json, features.json) themselves, as ``mock_data``'s
``USE_FILES`` policy expects, with the features of coco_captions (a 3-name label list instead of
COCO's 80: only the names are read).
"""
import io
import json
import math
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import caption_stats as study
from experiments import caption_stats_report as report
from experiments import config
from experiments.caption_stats_config import CaptionStatsConfig
from invariance.data import caption_sources
from invariance.data import caption_stats
from tests import cli

LABELS = ["person", "car", "traffic light"]
LIGHT, CAR, PERSON = 2, 1, 0
EDGES = (0.0, 0.001, 0.01, 0.1, 1.0)


def _box(side_y, side_x):
  return np.array([0.1, 0.1, 0.1 + side_y, 0.1 + side_x], np.float32)


# Six hand-made images: (boxes with labels, captions). Train holds A-D, val E-F.
IMAGES = {
    "A": ([(_box(0.5, 0.5), LIGHT), (_box(0.8, 0.8), PERSON)],        # light area 0.25
          ["A red traffic light over a street.", "Cars wait at the intersection.",
           "a city street"]),
    "B": ([(_box(0.02, 0.02), LIGHT)],                                 # 0.0004
          ["A busy street with cars.", "People walking."]),
    "C": ([(_box(0.05, 0.1), LIGHT), (_box(0.01, 0.01), LIGHT)],      # largest 0.005
          ["The stoplight is green.", "a red bus drives past the traffic signal",
           "Traffic lights above the road"]),
    "D": ([(_box(0.3, 0.3), CAR)], ["A traffic light and a car", "a car"]),   # no light box
    "E": ([], ["a green field"]),
    "F": ([(_box(0.3, 0.3), LIGHT)], ["Street corner at night."]),     # 0.09
}
SPLITS = {"train": "ABCD", "val": "EF"}
# Counted by hand from IMAGES (colour "near": within 3 words of a mention). Columns: images, with a
# mentioning caption, with a colour named near a mention, with a colour word in a mentioning
# caption; then the same per caption.
KEYS = ("images", "images_mention", "images_colour_near", "images_colour_any",
        "captions", "captions_mention", "captions_colour_near", "captions_colour_any")
EXPECTED = {group: dict(zip(KEYS, counts)) for group, counts in {
    "with_box":      (4, 2, 2, 2, 9, 4, 2, 3),      # A B C F
    "[0, 0.001)":    (1, 0, 0, 0, 2, 0, 0, 0),      # B
    "[0.001, 0.01)": (1, 1, 1, 1, 3, 3, 1, 2),      # C
    "[0.01, 0.1)":   (1, 0, 0, 0, 1, 0, 0, 0),      # F
    "[0.1, 1]":      (1, 1, 1, 1, 3, 1, 1, 1),      # A
    "without_box":   (2, 1, 0, 0, 3, 1, 0, 0),      # D E
    "all":           (6, 3, 2, 2, 12, 5, 2, 3),
}.items()}
LIGHT_BOXES = 5


def _example(key):
  boxes, captions = IMAGES[key]
  return {"image/id": ord(key), "image/filename": f"{key}.jpg",
          "objects": {"bbox": [b for b, _ in boxes], "label": [lab for _, lab in boxes],
                      "area": [1] * len(boxes), "id": list(range(len(boxes))),
                      "is_crowd": [False] * len(boxes)},
          "captions": {"text": [c.encode() for c in captions], "id": list(range(len(captions)))}}


def _features(with_boxes=True):
  feats = {"image": tfds.features.Image(encoding_format="jpeg"),
           "image/filename": tfds.features.Text(), "image/id": np.int64,
           "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64})}
  if with_boxes:
    feats["objects"] = tfds.features.Sequence({
        "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
        "label": tfds.features.ClassLabel(names=LABELS), "is_crowd": np.bool_})
  return tfds.features.FeaturesDict(feats)


def _write_dataset(root, name="coco_captions", config_name="2014", version="1.1.0",
                   with_boxes=True, records=False):
  """A prepared-looking TFDS dataset in ``root``: its metadata, and (``records``) the hand-made
  examples serialised into array_record files, as `tfds build` would leave them."""
  parts = [root, name] + ([config_name] if config_name else []) + [version]
  d = os.path.join(*parts)
  os.makedirs(d, exist_ok=True)
  features = _features(with_boxes)
  template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
  splits = [tfds.core.SplitInfo(
      name=split, shard_lengths=[len(keys)], num_bytes=0,
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=d, template=template, dataset_name=name, split=split,
          filetype_suffix="array_record")) for split, keys in SPLITS.items()]
  ident = tfds.core.DatasetIdentity(name=name, version=tfds.core.Version(version),
                                    config_name=config_name or None, data_dir=d,
                                    module_name="tests.test_caption_stats")
  info = tfds.core.DatasetInfo(builder=ident, features=features,
                               split_dict=tfds.core.SplitDict(splits))
  info.set_file_format("array_record")
  info.write_to_directory(d)
  if records:
    from array_record.python import array_record_module
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    for split, keys in SPLITS.items():
      writer = array_record_module.ArrayRecordWriter(
          os.path.join(d, f"{name}-{split}.array_record-00000-of-00001"), "group_size:1")
      for key in keys:
        writer.write(features.serialize_example({**_example(key), "image": buf.getvalue()}))
      writer.close()
  return d


def _hand_made_source(self, split, decoders=None, deserialize_method=None, **kwargs):
  del self, decoders, deserialize_method, kwargs
  return [_example(k) for k in SPLITS[split]]


@pytest.fixture
def mocked_coco(tmp_path):
  root = str(tmp_path / "metadata")
  _write_dataset(root)
  _write_dataset(root, name="captions_without_boxes", config_name="", version="1.0.0",
                 with_boxes=False)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES, data_dir=root,
                              as_data_source_fn=_hand_made_source):
    yield root


def _config(tmp_path, **kwargs):
  cfg = CaptionStatsConfig(**{"workdir": str(tmp_path / "wd"), "splits": ("train", "val"),
                              "area_edges": EDGES, **kwargs})
  cfg.validate()
  return cfg


def _groups(results):
  return {g["group"]: g for g in results["dataset"]["groups"]}


# -- pure counting ----------------------------------------------------------------------------
def test_caption_flags_hand_counted():
  caps = ["A red traffic light.", "The traffic light is green", "Traffic-lights!", "stoplight",
          "a red bus drives past the stop light", "a red bus at the stop light",
          "greenery near traffic lights", "a red car", "Stop lights, AMBER"]
  flags = caption_stats.caption_flags(caps, caption_stats.Patterns())
  assert flags["mention"].tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 1]
  # "red bus drives past the stop light": 4 words between > window 3; "greenery" is no "green".
  assert flags["colour_near"].tolist() == [1, 1, 0, 0, 0, 1, 0, 0, 1]
  assert flags["colour_any"].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1]
  wide = caption_stats.caption_flags(caps, caption_stats.Patterns(window=4))
  assert wide["colour_near"].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1]
  own = caption_stats.Patterns(mention="pedestrians?", colour="crossing")
  assert caption_stats.caption_flags(["A Pedestrian crossing", "pedestrianised"], own)[
      "colour_near"].tolist() == [True, False]


def test_area_strata_edges_are_half_open_and_the_last_closed():
  groups = caption_stats.area_groups(np.array([np.nan, 0.0, 0.001, 0.0999, 0.1, 1.0]), EDGES)
  names = caption_stats.stratum_names(EDGES)
  assert list(groups) == ["with_box", *names, "without_box", "all"]
  assert [int(np.flatnonzero(groups[n]).size) for n in names] == [1, 1, 1, 2]
  assert groups["[0.1, 1]"].tolist() == [False, False, False, False, True, True]
  assert groups["without_box"].tolist() == [True] + [False] * 5


def test_image_counts_hand_counted_and_additive():
  captions, owner, areas = [], [], []
  for i, key in enumerate("ABCDEF"):
    boxes, caps = IMAGES[key]
    captions += caps
    owner += [i] * len(caps)
    light = [(b[2] - b[0]) * (b[3] - b[1]) for b, lab in boxes if lab == LIGHT]
    areas.append(max(light) if light else np.nan)
  flags = caption_stats.caption_flags(captions, caption_stats.Patterns())
  counts = caption_stats.image_counts(flags, np.array(owner),
                                      caption_stats.area_groups(np.array(areas), EDGES))
  assert counts == EXPECTED
  # Two halves (as two splits) add up to the whole.
  half = len(IMAGES["A"][1]) + len(IMAGES["B"][1])
  first = caption_stats.image_counts({k: v[:half] for k, v in flags.items()},
                                     np.array(owner[:half]),
                                     caption_stats.area_groups(np.array(areas[:2]), EDGES))
  second = caption_stats.image_counts({k: v[half:] for k, v in flags.items()},
                                      np.array(owner[half:]) - 2,
                                      caption_stats.area_groups(np.array(areas[2:]), EDGES))
  assert caption_stats.add_counts(first, second) == EXPECTED


def test_intervals_match_their_formulas():
  z = 1.959963984540054
  for k, n in ((2, 4), (0, 7), (13, 200)):
    got = report.proportion(k, n, "wilson")
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    assert got["rate"] == k / n and (got["k"], got["n"]) == (k, n)
    assert got["low"] == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert got["high"] == pytest.approx(min(1.0, centre + half), abs=1e-9)
  from scipy import stats
  exact = report.proportion(2, 4, "clopper-pearson")
  assert exact["low"] == pytest.approx(stats.beta.ppf(0.025, 2, 3))
  assert exact["high"] == pytest.approx(stats.beta.ppf(0.975, 3, 2))
  assert report.proportion(0, 0, "wilson")["rate"] is None


# -- coco_captions through mock_data and through real array_record files ------------------------
def test_conditional_rates_on_mocked_coco_captions(tmp_path, mocked_coco):
  cfg = _config(tmp_path, log_every=1)
  opened = caption_sources.open_split("coco_captions", "train", cfg.spec)
  assert opened.label_id == LIGHT and len(opened) == 4
  data = caption_sources.read_split(opened, chunk=3)
  np.testing.assert_allclose(data.largest_area, [0.25, 0.0004, 0.005, np.nan], rtol=1e-5)
  assert data.num_boxes.tolist() == [1, 1, 2, 0]
  assert data.caption_image.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
  study.main(cfg)
  with open(tmp_path / "wd" / "results.json") as f:
    results = json.load(f)
  groups = _groups(results)
  assert {name: g["counts"] for name, g in groups.items()} == EXPECTED
  assert results["dataset"]["boxes"] == LIGHT_BOXES and results["dataset"]["examples"] == 6
  with_box = groups["with_box"]
  assert with_box["per_image"]["mention"]["k"] == 2 and with_box["per_image"]["mention"]["n"] == 4
  assert with_box["per_image"]["colour_given_mention"]["rate"] == 1.0
  assert with_box["per_caption"]["mention"]["rate"] == 4 / 9
  assert with_box["per_caption"]["colour_given_mention"]["rate"] == 2 / 4
  assert results["patterns"]["mention"].startswith(r"\b(?:traffic")
  assert "wilson" in results["interval"]
  for name in ("results.md", "caption_stats.png"):
    assert os.path.getsize(tmp_path / "wd" / name) > 0
  text = (tmp_path / "wd" / "results.md").read_text()
  assert "50.00% [" in text and "(2/4)" in text and "P(colour \\| mention)" in text


def test_cli_on_array_record_files_and_a_caption_file(tmp_path):
  """The command a user runs, on a prepared-looking coco_captions (real array_record records, no
  mock: images skipped, not decoded) and a caption file: the same hand-counted numbers."""
  data_dir = str(tmp_path / "tfds")
  _write_dataset(data_dir, records=True)
  caps = tmp_path / "captions.txt"
  caps.write_text("A red traffic light\n\n  \na dog\nthe stop light is green\ntraffic lights\n")
  wd = tmp_path / "wd"
  proc = cli.popen("caption_stats", "--flagfile=experiments/configs/caption_stats.flags",
                   f"--data_dir={data_dir}", "--splits=train,val", f"--workdir={wd}",
                   f"--caption_files={caps}", "--log_every=2")
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-3000:]
  assert "caption_stats: coco_captions train images 4/4" in err
  with open(wd / "results.json") as f:
    results = json.load(f)
  assert {name: g["counts"] for name, g in _groups(results).items()} == EXPECTED
  (corpus,) = results["corpora"]
  assert corpus["blank"] == 2 and corpus["counts"] == dict(
      captions=4, captions_mention=3, captions_colour_near=2, captions_colour_any=2)
  assert corpus["per_caption"]["mention"]["rate"] == 3 / 4
  assert "| with_box | 4 | 50.00% [" in out


def test_caption_file_formats_give_the_same_counts(tmp_path):
  import pyarrow as pa
  from pyarrow import csv, parquet
  captions = ["A red traffic light", None, "", "Two stoplights", "green traffic signal ahead",
              "a yellow cab", "the traffic light, which is amber"]
  table = pa.table({"url": [f"u{i}" for i in range(len(captions))], "caption": captions})
  parquet.write_table(table, tmp_path / "c.parquet")
  csv.write_csv(table, tmp_path / "c.csv")
  (tmp_path / "c.txt").write_text("\n".join(c or "" for c in captions) + "\n")
  cfg = _config(tmp_path, dataset="", caption_files=(str(tmp_path / "c.txt"),))
  expected = dict(captions=5, captions_mention=4, captions_colour_near=3, captions_colour_any=3)
  for name in ("c.txt", "c.parquet", "c.csv"):
    row = study.corpus_row(cfg, str(tmp_path / name))
    assert row["counts"] == expected and row["blank"] == 2, name


# -- bad input: one line, before any work -------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["--mention_pattern=traffic (light"], "--mention_pattern='traffic (light' is not a regular"),
    (["--colour_pattern=red|"], "matches the empty string"),
    (["--area_edges=0,0.1,0.01,1"], "--area_edges=0,0.1,0.01,1 are impossible strata"),
    (["--area_edges=0.001,0.1,1"], "impossible strata"),
    (["--area_edges=0,1.5"], "--area_edges=0,1.5: allowed: comma-separated numbers >= 0 and <= 1"),
    (["--area_edges=0"], "impossible strata"),
    (["--dataset="], "--dataset='': allowed: a TFDS dataset name, or --caption_files"),
    (["--interval=normal"], "unknown 'normal'"),
])
def test_bad_flags_one_line(args, expected):
  got = cli.flag_error(CaptionStatsConfig, "--workdir=unused", *args)
  assert expected in got and "\n" not in got, got


def test_bad_caption_files_one_line(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  import pyarrow as pa
  from pyarrow import parquet
  parquet.write_table(pa.table({"TEXT": ["a traffic light"]}), tmp_path / "laion.parquet")
  for path, expected in ((empty, "is empty"), (tmp_path / "missing.txt", "no such file"),
                         (tmp_path / "laion.parquet", "--caption_column='caption' is not a column"),
                         (tmp_path / "c.json", "unknown extension")):
    got = cli.flag_error(CaptionStatsConfig, "--workdir=unused", "--dataset=",
                         f"--caption_files={path}")
    assert expected in got and "\n" not in got, got


def test_blank_only_caption_file_writes_no_results(tmp_path):
  blank = tmp_path / "blank.txt"
  blank.write_text("\n   \n\n")
  cfg = _config(tmp_path, dataset="", caption_files=(str(blank),))
  with pytest.raises(config.FlagError, match="holds no caption"):
    study.main(cfg)
  assert not os.path.exists(tmp_path / "wd" / "results.json")


def test_datasets_without_what_the_counts_need(tmp_path, mocked_coco):
  spec = caption_sources.BoxCaptionSpec()
  with pytest.raises(ValueError, match="has no box feature 'objects/bbox'"):
    caption_sources.open_split("captions_without_boxes", "train", spec)
  with pytest.raises(ValueError, match="box_label='stop sign' is not a class"):
    caption_sources.open_split("coco_captions", "train",
                               caption_sources.BoxCaptionSpec(label="stop sign"))
  with pytest.raises(ValueError, match="has no caption feature 'captions/txt'"):
    caption_sources.open_split("coco_captions", "train",
                               caption_sources.BoxCaptionSpec(caption_key="captions/txt"))
  with pytest.raises(ValueError, match="splits='testing' is not a split"):
    caption_sources.open_split("coco_captions", "testing", spec)
  cfg = _config(tmp_path, dataset="captions_without_boxes")
  with pytest.raises(ValueError, match="no box feature"):
    study.main(cfg)
  assert not os.path.exists(tmp_path / "wd")          # nothing written


def test_dataset_without_captions_through_mock_data():
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(ValueError, match="'mnist' has no caption feature 'captions/text'"):
      caption_sources.open_split("mnist", "train")


def test_unknown_or_unprepared_dataset(tmp_path):
  with pytest.raises(ValueError, match="is not a TFDS dataset"):
    caption_sources.open_split("no_such_dataset_xyz", "train", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="'coco_captions' is not prepared"):
    caption_sources.open_split("coco_captions", "train", data_dir=str(tmp_path))


def test_cli_unknown_dataset_is_one_line_and_writes_nothing(tmp_path):
  wd = tmp_path / "wd"
  proc = cli.popen("caption_stats", "--flagfile=experiments/configs/caption_stats.flags",
                   "--dataset=no_such_dataset_xyz", f"--data_dir={tmp_path}", f"--workdir={wd}")
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == 2
  assert err.strip().splitlines()[-1].startswith("error: dataset='no_such_dataset_xyz' is not")
  assert not wd.exists()
