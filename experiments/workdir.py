"""The workdir contract every study shares: refuse rather than overwrite, reuse finished rows.

  * ``flags.json``   - the config identity that made this workdir (``config.identity``: every
                       result-defining field and the study's name). A rerun whose identity differs
                       is refused (one-line error) instead of mixing results.
  * ``rows/*.json``  - one finished row each, written atomically; a rerun reuses them.
  * ``checkpoints/<run>/<seed>`` - orbax checkpoints and ``metrics.jsonl`` (per-step scalars).
  * ``results.json``, ``results.md``, ``*.png`` - written atomically (temp file + rename) only
    once every row exists, so earlier results are never replaced by partial ones.
  * Under ``--distributed`` every process computes every row (training is collective) and only
    process 0 writes; the workdir must be on a filesystem that all hosts see.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from typing import Callable

from absl import logging

from experiments.config import fail


def is_writer() -> bool:
  """Whether this process writes results (process 0; every process computes them)."""
  import jax
  return jax.process_index() == 0


def write_atomic(path: str, data: bytes | str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str, flag: str = "workdir"):
  """A JSON file of a workdir; a damaged one is a one-line error naming the file."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    fail(flag, os.path.dirname(path), f"{path} is not valid JSON ({e.msg} at line {e.lineno}); "
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
    if os.path.exists(path) and not os.path.isdir(path):
      fail("workdir", path, "is a file; allowed: a directory (new or made by this study)")
    self.path, self.study = path, study
    self.flags = {**identity, "study": study}
    self.rows_dir = os.path.join(path, "rows")
    _check_same_on_every_process(self.flags)
    stored = os.path.join(path, "flags.json")
    if not os.path.exists(stored) and any(
        os.path.exists(os.path.join(path, name)) for name in ("results.json", "rows")):
      fail("workdir", path, "holds results but no flags.json; allowed: a new --workdir")
    if os.path.exists(stored):
      previous = read_json(stored)
      if previous != self.flags:
        changed = sorted(k for k in set(previous) | set(self.flags)
                         if previous.get(k) != self.flags.get(k))
        fail("workdir", path, f"holds results made with different flags ({', '.join(changed)}); "
             "allowed: the same flags, or a new --workdir")
    if create:
      self.create()

  def create(self) -> None:
    stored = os.path.join(self.path, "flags.json")
    if not os.path.exists(stored) and is_writer():
      write_json(stored, self.flags)

  def checkpoint_dir(self, run: str, seed: int) -> str:
    return os.path.abspath(os.path.join(self.path, "checkpoints", run, str(seed)))

  def metrics_path(self, run: str, seed: int) -> str:
    """Where ``train.fit`` appends the run's per-step scalars."""
    return os.path.abspath(os.path.join(self.path, "metrics", run, f"seed{seed}.jsonl"))

  def has_row(self, key: str) -> bool:
    return os.path.exists(os.path.join(self.rows_dir, key + ".json"))

  def row(self, key: str, compute: Callable[[], dict]) -> dict:
    """The finished row ``key``, computed (and saved atomically) only if it is not there yet."""
    path = os.path.join(self.rows_dir, key + ".json")
    if os.path.exists(path):
      logging.info("%s: %s already finished, reusing its row", self.study, key)
      return read_json(path)
    row = compute()
    if is_writer():
      write_json(path, row)
    return row

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

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
