"""The workdir contract every study shares: refuse rather than overwrite, reuse finished rows.

  * ``flags.json``   - the config identity that made this workdir (``config.identity``: every
                       result-defining field, the study's name and the batch order). A rerun
                       whose identity differs is refused (one-line error) instead of mixing
                       results.
  * ``rows/*.json``  - one finished row each, written atomically; a rerun reuses them.
  * ``checkpoints/<run>/<seed>`` - orbax checkpoints and ``metrics.jsonl`` (per-step scalars).
  * ``results.json``, ``results.md``, ``*.png`` - written atomically (temp file + rename) only
    once every row exists, so earlier results are never replaced by partial ones.
  * ``tensorboard/<run>/seed<k>``, ``profile/<run>/seed<k>`` - TensorBoard event files (beside
    ``metrics.jsonl``, which stays the source of truth) and ``--profile_steps`` traces.
  * Under ``--distributed`` every process computes every row (training is collective) and only
    process 0 writes; the workdir must be on a filesystem that all hosts see, or on Cloud Storage.
  * ``--workdir=gs://bucket/path`` works the same: every file goes through ``invariance.storage``
    (one object upload is Cloud Storage's atomic write) and orbax writes checkpoints there itself.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Callable

from absl import logging

from experiments import config
from experiments.config import fail
from invariance import storage
from invariance.data import pipeline


def is_writer() -> bool:
  """Whether this process writes results (process 0; every process computes them)."""
  import jax
  return jax.process_index() == 0


write_atomic = storage.write_atomic


def write_json(path: str, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str, flag: str = "workdir"):
  """A JSON file of a workdir; a damaged one is a one-line error naming the file."""
  try:
    return json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    fail(flag, storage.parent(path), f"{path} is not valid JSON ({e.msg} at line {e.lineno}); "
         "allowed: delete that file to recompute it, or use a new --workdir")


def save_figure(fig, path: str) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  write_atomic(path, buf.getvalue())


def _check_same_on_every_process(identity: dict) -> None:
  """Under --distributed every process must run the same study with the same config (else their
  collectives would not match): each compares its identity's hash with process 0's, and all stop
  together if any differs."""
  import jax
  import numpy as np
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).digest()
  mine = np.frombuffer(digest, np.uint32)
  same = np.array_equal(mine, np.asarray(multihost_utils.broadcast_one_to_all(mine)))
  every = np.asarray(multihost_utils.process_allgather(np.array([same])))
  if not every.all():
    fail("distributed", True, "processes " + ", ".join(
        str(i) for i in np.flatnonzero(~every.reshape(-1))) + " run with flags that differ from "
         "process 0's; allowed: the same result-defining flags on every process")


class Workdir:
  """Rows, checkpoints and results of one study in one directory (see module docstring)."""

  def __init__(self, path: str, study: str, identity: dict, create: bool = True):
    """``create=False`` checks the contract without writing anything (call ``create`` later,
    once every input the study needs has been checked)."""
    if not path:
      fail("workdir", path, "allowed: a directory path (required)")
    problem = storage.bucket_error(path)
    if problem:
      fail("workdir", path, f"{problem}; allowed: a gs:// path in an existing bucket you can "
           "write, or a local directory")
    if storage.isfile(path):
      fail("workdir", path, "is a file; allowed: a directory (new or made by this study)")
    self.path, self.study = path, study
    self.flags = {**identity, "study": study, "batch_order": pipeline.BATCH_ORDER}
    self.rows_dir = storage.join(path, "rows")
    _check_same_on_every_process(self.flags)
    stored = storage.join(path, "flags.json")
    exists = storage.exists(stored)
    if not exists and any(storage.exists(storage.join(path, name))
                          for name in ("results.json", "rows")):
      fail("workdir", path, "holds results but no flags.json; allowed: a new --workdir")
    if exists:
      previous = read_json(stored)
      if previous != self.flags:
        changed = sorted(k for k in set(previous) | set(self.flags)
                         if previous.get(k) != self.flags.get(k))
        fail("workdir", path, f"holds results made with different flags ({', '.join(changed)}); "
             "allowed: the same flags, or a new --workdir")
    if create:
      self.create()

  def create(self) -> None:
    stored = storage.join(self.path, "flags.json")
    if not storage.exists(stored) and is_writer():
      write_json(stored, self.flags)

  def _run_path(self, kind: str, run: str, leaf: str) -> str:
    return storage.absolute(storage.join(self.path, kind, run, leaf))

  def checkpoint_dir(self, run: str, seed: int) -> str:
    return self._run_path("checkpoints", run, str(seed))

  def metrics_path(self, run: str, seed: int) -> str:
    """Where ``train.fit`` appends the run's per-step scalars."""
    return self._run_path("metrics", run, f"seed{seed}.jsonl")

  def events_dir(self, run: str, seed: int) -> str:
    """The run's TensorBoard event files (``tensorboard --logdir=<workdir>/tensorboard``)."""
    return self._run_path("tensorboard", run, f"seed{seed}")

  def profile_dir(self, run: str, seed: int) -> str:
    """Where ``--profile_steps`` traces of the run go (TensorBoard's profile tab, Perfetto)."""
    return self._run_path("profile", run, f"seed{seed}")

  def train_paths(self, run: str, seed: int, cfg) -> dict:
    """The ``TrainConfig`` fields that place a run's files in this workdir (checkpoints, metrics,
    TensorBoard events) and ask for its profile (``cfg.profile_steps``)."""
    return dict(checkpoint_dir=self.checkpoint_dir(run, seed),
                metrics_path=self.metrics_path(run, seed), events_dir=self.events_dir(run, seed),
                profile_dir=self.profile_dir(run, seed),
                profile_steps=config.profile_range(cfg.profile_steps))

  def has_row(self, key: str) -> bool:
    return storage.exists(storage.join(self.rows_dir, key + ".json"))

  def row(self, key: str, compute: Callable[[], dict]) -> dict:
    """The finished row ``key``, computed (and saved atomically) only if it is not there yet."""
    path = storage.join(self.rows_dir, key + ".json")
    if storage.exists(path):
      logging.info("%s: %s already finished, reusing its row", self.study, key)
      return read_json(path)
    row = compute()
    if is_writer():
      write_json(path, row)
    return row

  def file(self, name: str) -> str:
    return storage.join(self.path, name)

  def publish(self, results: dict, markdown: str, plot: Callable[["Workdir"], None]) -> dict:
    """Write the finished study: ``plot(self)`` PNGs, then results.md and results.json, each
    atomically (results.json last, so its presence means everything is written). Only process 0
    writes; the others return the same results."""
    if not is_writer():
      return results
    plot(self)
    write_atomic(self.file("results.md"), markdown)
    write_json(self.file("results.json"), results)
    return results
