"""The one loop every study runs: config -> runs -> rows -> report.

A study lists its work as typed ``Run`` values (a row key and how to compute the row); ``run_all``
computes each row once (a finished row in the workdir is reused, so a killed study resumes where it
stopped) and logs one progress line per row with the elapsed time and an ETA.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

from absl import logging

from experiments import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """One row of a study: ``key`` names it in the workdir (``rows/<key>.json``), ``compute``
  makes it, ``describe`` (optional) turns the finished row into the progress line's summary."""
  key: str
  compute: Callable[[], dict]
  describe: Optional[Callable[[dict], str]] = None


def run_all(workdir: workdir_lib.Workdir, runs: Sequence[Run]) -> list[dict]:
  """The rows of ``runs`` in order, each computed only if the workdir does not hold it yet."""
  keys = [r.key for r in runs]
  duplicated = sorted({k for k in keys if keys.count(k) > 1})
  if duplicated:
    raise ValueError(f"run keys must be unique; repeated: {', '.join(duplicated)}")
  rows, start, computed = [], time.perf_counter(), 0
  for i, run in enumerate(runs):
    fresh = not workdir.has_row(run.key)
    row = workdir.row(run.key, run.compute)
    rows.append(row)
    computed += fresh
    elapsed = time.perf_counter() - start
    remaining = sum(not workdir.has_row(r.key) for r in runs[i + 1:])
    eta = f", ETA {elapsed / computed * remaining:.0f} s" if computed and remaining else ""
    summary = f": {run.describe(row)}" if run.describe else ""
    logging.info("%s [%d/%d] %s%s (%.0f s%s)", workdir.study, i + 1, len(runs), run.key, summary,
                 elapsed, eta)
  return rows
