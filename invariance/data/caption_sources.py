"""Captions to count (``invariance.data.caption_stats``): a captioned TFDS detection dataset, or a
caption-only corpus file.

* ``open_split(name, split, spec, data_dir)`` - one split of a TFDS dataset whose examples carry
  captions and labelled boxes (``coco_captions``: ``captions/text``, ``objects/bbox``,
  ``objects/label``), read with ``builder.as_data_source`` (array_record, no TensorFlow; images are
  not decoded). Every feature the counts need is checked first (one-line ``ValueError``), so a
  dataset without captions, boxes or the box label fails before anything is read. TFDS's code for
  ``coco_captions`` needs TensorFlow to build its feature spec, which the lab does not install: when
  the code cannot be loaded, the prepared dataset is opened from its files (``dataset_info.json``,
  ``features.json``), which is what TFDS does for a pinned version (``coco_captions/2014:1.1.0``).
  Nothing is downloaded: a dataset that is not prepared is ``sources.not_prepared_error``.
* ``read_split(opened, limit, progress)`` - its captions (flat, with each caption's image) and, per
  image, the area of the largest box with the label (a fraction of the image; nan when none).
  Every box with the label counts, COCO's crowd boxes (``is_crowd``, a group of lights) included.
* ``check_caption_file(path, column)`` / ``read_caption_file(path, column)`` - a corpus of captions:
  a text file (``.txt``, one caption per line), or one column of a ``.parquet``, ``.csv`` or
  ``.tsv`` file (LAION / DataComp metadata), read in chunks with pyarrow (installed with
  tensorflow_datasets). Blank captions (and nulls) are skipped and counted.

tensorflow_datasets and pyarrow are imported inside the functions.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator, Optional

import numpy as np

from invariance.data import sources

EXAMPLE = "coco_captions"
CAPTION_FILE_KINDS = {".txt": "text", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
CHUNK = 256


@dataclasses.dataclass(frozen=True)
class BoxCaptionSpec:
  """Where the captions, boxes and box labels are in an example ('/' walks nested features; a key
  that itself holds '/' such as ``image/id`` is matched whole) and which label is counted."""

  caption_key: str = "captions/text"
  box_key: str = "objects/bbox"
  label_key: str = "objects/label"
  label: str = "traffic light"


@dataclasses.dataclass(frozen=True, eq=False)
class CaptionedBoxes:
  """One split: every caption (flat), its image's index, and per image the largest labelled box's
  area fraction (nan: no box with the label) and the number of such boxes."""

  captions: list
  caption_image: np.ndarray      # (C,) int64
  largest_area: np.ndarray       # (I,) float64
  num_boxes: np.ndarray          # (I,) int64


@dataclasses.dataclass(frozen=True, eq=False)
class OpenedSplit:
  name: str
  split: str
  source: Any
  spec: BoxCaptionSpec
  label_id: int

  def __len__(self) -> int:
    return len(self.source)


# -- TFDS -----------------------------------------------------------------------------------------
def _builder(name: str, data_dir):
  return sources.public_builder(name, data_dir, "dataset", "a TFDS dataset with captions and "
                                f"labelled boxes, e.g. {EXAMPLE}")


def open_split(name: str, split: str, spec: BoxCaptionSpec = BoxCaptionSpec(),
               data_dir=None) -> OpenedSplit:
  """A split ready to read, after checking that it has the captions, boxes and label of ``spec``
  (module docstring). Reads no record."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from invariance.data import tfds_builders  # pylint: disable=import-outside-toplevel
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"dataset={name!r} is invalid; allowed: a TFDS dataset name, e.g. {EXAMPLE}")
  builder = _builder(name, data_dir)
  features = builder.info.features
  step = sources.sequence_item

  def missing(what):
    return lambda key, part, keys: ValueError(
        f"dataset={name!r} has no {what} feature {key!r} (no {part!r} among: {', '.join(keys)}); "
        f"allowed: a dataset with captions and labelled boxes such as {EXAMPLE}, or the "
        "feature's key")

  text = step(sources.feature_path(features, spec.caption_key, step, missing("caption")))
  if not isinstance(text, tfds.features.Text) and getattr(text, "np_dtype", None) not in (
      np.str_, np.object_, np.bytes_):
    raise ValueError(f"dataset={name!r}: feature {spec.caption_key!r} is {type(text).__name__}; "
                     "allowed: a text feature (the captions)")
  boxes = step(sources.feature_path(features, spec.box_key, step, missing("box")))
  if not isinstance(boxes, tfds.features.BBoxFeature):
    raise ValueError(f"dataset={name!r}: feature {spec.box_key!r} is {type(boxes).__name__}; "
                     "allowed: a BBoxFeature (normalised ymin, xmin, ymax, xmax)")
  labels = step(sources.feature_path(features, spec.label_key, step, missing("box label")))
  names = list(getattr(labels, "names", None) or [])
  if not names:
    raise ValueError(f"dataset={name!r}: feature {spec.label_key!r} has no class names; allowed: "
                     "a ClassLabel feature beside the boxes")
  if spec.label not in names:
    raise ValueError(f"box_label={spec.label!r} is not a class of {name!r} {spec.label_key}; "
                     f"allowed: one of {', '.join(names)}")
  if not tfds_builders.is_prepared(builder):
    raise sources.not_prepared_error(name, data_dir)
  if builder.info.splits and split not in builder.info.splits:
    raise ValueError(f"splits={split!r} is not a split of {name!r}; allowed: "
                     f"{', '.join(sorted(builder.info.splits))}")
  skip = {k: tfds.decode.SkipDecoding() for k, f in features.items()
          if isinstance(f, tfds.features.Image)}
  try:
    source = builder.as_data_source(split, decoders=skip or None)
  except Exception as e:  # pylint: disable=broad-except  (one line, with what to do)
    raise ValueError(f"TFDS dataset {name!r} split {split!r} in data_dir={sources._where(data_dir)!r} "
                     f"cannot be read with random access: {str(e).splitlines()[0]}; rebuild it "
                     f"with `tfds build {name} --file_format=array_record`") from None
  return OpenedSplit(name, split, source, spec, names.index(spec.label))


def _records(source, start: int, stop: int) -> list:
  try:
    return list(source.__getitems__(range(start, stop)))
  except (AttributeError, TypeError):  # a plain sequence, or mock_data's unbound __getitems__
    return [source[i] for i in range(start, stop)]


def _text(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_split(opened: OpenedSplit, limit: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None,
               chunk: int = CHUNK) -> CaptionedBoxes:
  """The first ``limit`` (all when None) examples of an opened split; ``progress(done, total)``
  after each chunk of records."""
  spec = opened.spec
  total = len(opened) if limit is None else min(limit, len(opened))
  captions, caption_image = [], []
  largest, counts = np.full(total, np.nan), np.zeros(total, np.int64)

  def missing(key, part, keys):
    return ValueError(f"dataset={opened.name!r} split {opened.split!r}: an example has no {key!r} "
                      f"(no {part!r} among: {', '.join(keys)}); allowed: examples with "
                      f"{spec.caption_key}, {spec.box_key} and {spec.label_key}")

  for start in range(0, total, chunk):
    for offset, example in enumerate(_records(opened.source, start, min(start + chunk, total))):
      i = start + offset
      texts = sources.feature_path(example, spec.caption_key, lambda x: x, missing)
      captions.extend(_text(t) for t in np.asarray(texts, object).reshape(-1))
      caption_image.extend([i] * (len(captions) - len(caption_image)))
      boxes = np.asarray(sources.feature_path(example, spec.box_key, lambda x: x, missing),
                         np.float64).reshape(-1, 4)
      labels = np.asarray(sources.feature_path(example, spec.label_key, lambda x: x, missing)).reshape(-1)
      if len(boxes) != len(labels):
        raise ValueError(f"dataset={opened.name!r} split {opened.split!r} example {i}: "
                         f"{len(boxes)} boxes but {len(labels)} labels; allowed: one label per box")
      mine = boxes[labels == opened.label_id]
      counts[i] = len(mine)
      if len(mine):
        sides = np.clip(mine[:, 2:] - mine[:, :2], 0.0, None)
        largest[i] = float(np.max(sides[:, 0] * sides[:, 1]))
    if progress is not None:
      progress(min(start + chunk, total), total)
  return CaptionedBoxes(captions, np.asarray(caption_image, np.int64), largest, counts)


# -- caption files --------------------------------------------------------------------------------
def caption_file_kind(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext not in CAPTION_FILE_KINDS:
    raise ValueError(f"caption_files={path!r} has an unknown extension {ext!r}; allowed: "
                     f"{', '.join(CAPTION_FILE_KINDS)} (text: one caption per line)")
  return CAPTION_FILE_KINDS[ext]


def _csv_reader(path: str, kind: str, column: Optional[str]):
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  from pyarrow import csv  # pylint: disable=import-outside-toplevel
  parse = csv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")
  convert = (csv.ConvertOptions(include_columns=[column], column_types={column: pa.string()})
             if column is not None else None)
  return csv.open_csv(path, parse_options=parse, convert_options=convert)


def _columns(path: str, kind: str) -> list[str]:
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  try:
    if kind == "parquet":
      from pyarrow import parquet  # pylint: disable=import-outside-toplevel
      return list(parquet.ParquetFile(path).schema_arrow.names)
    return list(_csv_reader(path, kind, None).schema.names)
  except (pa.ArrowInvalid, OSError) as e:
    raise ValueError(f"caption_files={path!r} cannot be read as {kind} "
                     f"({str(e).splitlines()[0][:200]}); allowed: a {kind} file") from None


def check_caption_file(path: str, column: str) -> str:
  """The file's kind, after checking that it exists, is not empty and (parquet, csv, tsv) has the
  caption ``column``. Reads at most the file's header."""
  kind = caption_file_kind(path)
  if not os.path.isfile(path):
    raise ValueError(f"caption_files={path!r}: no such file; allowed: an existing file")
  if os.path.getsize(path) == 0:
    raise ValueError(f"caption_files={path!r} is empty; allowed: a file with captions")
  if kind != "text":
    names = _columns(path, kind)
    if column not in names:
      raise ValueError(f"caption_column={column!r} is not a column of {path!r}; allowed: "
                       f"{', '.join(names)}")
  return kind


def read_caption_file(path: str, column: str, chunk: int = 65536) -> Iterator[list]:
  """Chunks (lists) of the file's captions, blanks and nulls included as ``None`` / ''."""
  kind = check_caption_file(path, column)
  if kind == "text":
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = []
      for line in f:
        lines.append(line.rstrip("\r\n"))
        if len(lines) == chunk:
          yield lines
          lines = []
      if lines:
        yield lines
    return
  if kind == "parquet":
    from pyarrow import parquet  # pylint: disable=import-outside-toplevel
    batches = parquet.ParquetFile(path).iter_batches(batch_size=chunk, columns=[column])
  else:
    batches = _csv_reader(path, kind, column)
  for batch in batches:
    yield batch.column(0).to_pylist()


def nonblank(captions: list) -> tuple[list, int]:
  """(captions that are not null or blank, how many were)."""
  kept = [c for c in captions if c is not None and str(c).strip()]
  return kept, len(captions) - len(kept)
