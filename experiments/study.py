"""What every study main shares: flag errors, the workdir contract, resumable rows, results files.

The workdir contract:
  * ``flags.json``   - the flags that made this workdir. A rerun with different result-defining
                       flags is refused (one-line error) instead of mixing results.
  * ``rows/*.json``  - one finished (model, seed) row each, written atomically; a rerun skips them.
  * ``checkpoints/<model>/<seed>`` - orbax checkpoints of unfinished (and finished) training.
  * ``results.json``, ``results.md``, ``*.png`` - written atomically (temp file + rename) only
    once every row exists, so earlier results are never replaced by partial ones.
  * Under ``--distributed`` every process computes every row (training is collective) and only
    process 0 writes; the workdir must be on a filesystem that all hosts see.
"""
from __future__ import annotations

import json
import logging as logging_std
import math
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, Sequence

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS

# Flags that do not change results (so a rerun may change them freely).
RUN_ONLY_FLAGS = ("workdir", "log_every", "checkpoint_every", "compile_cache", "distributed",
                  "coordinator_address", "num_processes", "process_id", "heartbeat_timeout")


class _QuietLibraries(logging_std.Filter):
  """Keep progress lines readable: drop orbax's INFO chatter (warnings and errors still show)."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "orbax" not in record.pathname

flags.DEFINE_string("workdir", None, "Where checkpoints and results go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; one row per model x seed.")
flags.DEFINE_integer("log_every", 200, "Steps between progress lines.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_string("compile_cache", os.path.join(os.path.expanduser("~"), ".cache", "invariance_lab",
                                                  "jax"),
                    "Persistent XLA compilation cache ('' disables): later seeds, reruns and "
                    "resumes load compiled programs instead of recompiling them.")
flags.DEFINE_enum("prng_impl", "rbg", ["rbg", "threefry2x32", "unsafe_rbg"],
                  "jax PRNG implementation. rbg compiles in a fraction of threefry's time on "
                  "XLA:CPU (threefry's unrolled rounds cost ~5 s per small init here).")


# Multi-host (see README "Running on GPUs and Cloud TPUs"). Results do not depend on these: every
# process feeds its rows of the same global batch.
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize before any work: one process per host, a global "
                  "data mesh over every process's devices, process 0 writes --workdir.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS, or auto-detected "
                    "on Cloud TPU / SLURM).")
flags.DEFINE_integer("num_processes", None,
                     "Number of processes (default: $JAX_NUM_PROCESSES, or auto-detected).")
flags.DEFINE_integer("process_id", None,
                     "This process's index (default: $JAX_PROCESS_ID, or auto-detected).")
flags.DEFINE_integer("heartbeat_timeout", 60,
                     "Seconds without a heartbeat after which a process counts as dead: the "
                     "survivors stop with an error instead of waiting forever.")


class FlagError(ValueError):
  """A bad flag value: printed as one line, exit code 2, nothing written."""


def fail(flag: str, value, allowed: str):
  raise FlagError(f"--{flag}={value}: {allowed}")


def parse_seeds() -> list[int]:
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    fail("seeds", ",".join(FLAGS.seeds), "allowed: comma-separated integers >= 0")
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    fail("seeds", ",".join(FLAGS.seeds), "allowed: distinct integers >= 0, at least one")
  return seeds


def number_list(flag: str, cast=int, low=1, high=None) -> tuple:
  """Parse a list flag of distinct numbers in [low, high] (at least one), or fail naming the flag."""
  raw = ",".join(FLAGS[flag].value)
  kind = "integers" if cast is int else "numbers"
  allowed = f"allowed: distinct comma-separated {kind} >= {low}" + (
      f" and <= {high}" if high is not None else "") + ", at least one"
  try:
    values = tuple(cast(v) for v in FLAGS[flag].value)
  except ValueError:
    fail(flag, raw, allowed)
  if (not values or min(values) < low or (high is not None and max(values) > high)
      or len(set(values)) != len(values)):
    fail(flag, raw, allowed)
  return values


def check_choices(flag: str, values: Sequence[str], allowed: Sequence[str]) -> list[str]:
  values = list(values)
  bad = [v for v in values if v not in allowed]
  if bad or not values:
    fail(flag, ",".join(values), f"unknown {bad[0]!r}; allowed: {', '.join(allowed)}" if bad else
         f"allowed: one or more of {', '.join(allowed)}")
  return values


def check_data_parallel(flag: str) -> int:
  """A global batch size flag: >= 1 and a multiple of the device count (every process's)."""
  import jax
  value = check_positive(flag, FLAGS[flag].value)
  if value % jax.device_count():
    fail(flag, value, f"allowed: a multiple of the {jax.device_count()} devices (data parallel)")
  return value


def check_positive(flag: str, value, low=1):
  if value is None or value < low:
    fail(flag, value, f"allowed: >= {low}")
  return value


def main_wrapper(main: Callable[[], Any]):
  """absl entry point: flag errors and bad input become one line on stderr and exit code 2."""

  def _main(argv):
    if len(argv) > 1:
      fail("argv", " ".join(argv[1:]), "unexpected positional arguments")
    import jax
    jax.config.update("jax_default_prng_impl", FLAGS.prng_impl)
    start_distributed()
    if FLAGS.compile_cache:
      jax.config.update("jax_compilation_cache_dir", FLAGS.compile_cache)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    main()

  def run():
    try:
      app.run(_main, flags_parser=_parse_flags)
    except (FlagError, ValueError, OSError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except FloatingPointError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(3)

  return run


def _env_int(flag: str, env: str):
  value = FLAGS[flag].value
  if value is None and os.environ.get(env):
    try:
      value = int(os.environ[env])
    except ValueError:
      fail(flag, os.environ[env], f"(from ${env}) allowed: an integer")
  return value


def start_distributed() -> None:
  """``--distributed``: join the other processes (before anything touches a jax backend)."""
  given = [n for n in ("coordinator_address", "num_processes", "process_id", "heartbeat_timeout")
           if FLAGS[n].present]
  if not FLAGS.distributed:
    if given:
      fail(given[0], FLAGS[given[0]].value, "allowed only with --distributed")
    return
  import jax
  from invariance import parallel
  address = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  count = _env_int("num_processes", "JAX_NUM_PROCESSES")
  index = _env_int("process_id", "JAX_PROCESS_ID")
  if count is not None and count < 1:
    fail("num_processes", count, "allowed: >= 1")
  if index is not None and (index < 0 or (count is not None and index >= count)):
    fail("process_id", index, f"allowed: 0 .. num_processes - 1 = {(count or 1) - 1}")
  if len({count is None, index is None, address is None}) > 1:
    fail("distributed", True, "give --coordinator_address, --num_processes and --process_id "
         "together (or their $JAX_* variables), or none of them to auto-detect (Cloud TPU, SLURM)")
  host, _, port = (address or "").rpartition(":")
  if address is not None and not (host and port.isdigit() and 0 < int(port) < 65536):
    fail("coordinator_address", address, "allowed: host:port of process 0, port 1..65535")
  check_positive("heartbeat_timeout", FLAGS.heartbeat_timeout)
  # CPU collectives across processes need gloo; GPUs and TPUs use their own (NCCL, ICI/DCN).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    # A process that stops on an error waits at most --heartbeat_timeout at exit for the others
    # (JAX's shutdown barrier); when that barrier fails, JAX stops every process.
    parallel.initialize_distributed(address, count, index,
                                    heartbeat_timeout_seconds=FLAGS.heartbeat_timeout,
                                    shutdown_timeout_seconds=FLAGS.heartbeat_timeout)
  except (RuntimeError, ValueError) as e:
    fail("coordinator_address", address or "(auto-detect)",
         f"jax.distributed.initialize failed ({str(e).splitlines()[0][:200]}); allowed: the "
         "host:port of process 0, reachable from every process, with every process started")
  logging.info("distributed: process %d of %d, %d local / %d global devices (a dead peer stops "
               "every process after %d s without heartbeats)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               FLAGS.heartbeat_timeout)


def is_writer() -> bool:
  """Whether this process writes results (process 0; every process computes them)."""
  import jax
  return jax.process_index() == 0


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {str(e).splitlines()[0].replace('ERROR:: ', '')}", file=sys.stderr)
    sys.exit(2)


def result_flags(names: Iterable[str]) -> dict:
  """The flag values that define results (JSON-friendly)."""
  return {n: FLAGS[n].value for n in sorted(names) if n not in RUN_ONLY_FLAGS}


# -- atomic files ---------------------------------------------------------------------------------
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


def save_figure(fig, path: str) -> None:
  import io
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  write_atomic(path, buf.getvalue())


# -- the workdir ----------------------------------------------------------------------------------
def _check_same_on_every_process(flag_values: dict) -> None:
  """Under --distributed, every process must run the same study with the same flags (else their
  collectives would not match): every process compares its flags' hash with process 0's, and all
  of them stop together if any differs."""
  import hashlib
  import jax
  import numpy as np
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  digest = hashlib.sha256(json.dumps(flag_values, sort_keys=True).encode()).digest()
  mine = np.frombuffer(digest, np.uint32)
  same = np.array_equal(mine, np.asarray(multihost_utils.broadcast_one_to_all(mine)))
  every = np.asarray(multihost_utils.process_allgather(np.array([same])))
  if not every.all():
    fail("distributed", True, "processes " + ", ".join(
        str(i) for i in np.flatnonzero(~every.reshape(-1))) + " run with flags that differ from "
         "process 0's; allowed: the same result-defining flags on every process")


class Workdir:
  """Rows, checkpoints and results of one study in one directory (see module docstring)."""

  def __init__(self, path: str, study: str, flag_values: dict):
    if not path:
      fail("workdir", path, "allowed: a directory path (required)")
    self.path, self.study, self.flags = path, study, flag_values
    self.rows_dir = os.path.join(path, "rows")
    if os.path.exists(path) and not os.path.isdir(path):
      fail("workdir", path, "is a file; allowed: a directory (new or made by this study)")
    flag_values = {**flag_values, "study": study}
    self.flags = flag_values
    _check_same_on_every_process(flag_values)
    stored = os.path.join(path, "flags.json")
    if not os.path.exists(stored) and any(
        os.path.exists(os.path.join(path, name)) for name in ("results.json", "rows")):
      fail("workdir", path, "holds results but no flags.json; allowed: a new --workdir")
    if os.path.exists(stored):
      with open(stored) as f:
        previous = json.load(f)
      if previous != flag_values:
        changed = sorted(k for k in set(previous) | set(flag_values)
                         if previous.get(k) != flag_values.get(k))
        fail("workdir", path, f"holds results made with different flags ({', '.join(changed)}); "
             "allowed: the same flags, or a new --workdir")
    elif is_writer():
      write_json(stored, flag_values)

  def checkpoint_dir(self, model: str, seed: int) -> str:
    return os.path.abspath(os.path.join(self.path, "checkpoints", model, str(seed)))

  def _row_path(self, key: str) -> str:
    return os.path.join(self.rows_dir, key + ".json")

  def row(self, key: str, compute: Callable[[], dict]) -> dict:
    """The finished row ``key``, computed (and saved atomically) only if it is not there yet."""
    path = self._row_path(key)
    if os.path.exists(path):
      with open(path) as f:
        logging.info("%s: %s already finished, reusing its row", self.study, key)
        return json.load(f)
    row = compute()
    if is_writer():
      write_json(path, row)
    return row

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)


  def publish(self, results: dict, markdown: str, plot) -> dict:
    """Write the finished study: ``plot(self)`` PNGs, then results.md and results.json, each
    atomically (results.json last, so its presence means everything is written). Only process 0
    writes; the others return the same results."""
    if not is_writer():
      return results
    plot(self)
    write_atomic(self.file("results.md"), markdown)
    write_json(self.file("results.json"), results)
    return results


# -- summaries and tables -------------------------------------------------------------------------
def mean_sd(values: Sequence[float]) -> tuple[float, float]:
  n = len(values)
  mean = sum(values) / n
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
  return mean, sd


def summarize(rows: Sequence[dict], group_keys: Sequence[str], metrics: Sequence[str]) -> list[dict]:
  """Mean and sd of each metric over the rows that share ``group_keys`` (e.g. over seeds)."""
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
  out = []
  for key, rs in groups.items():
    entry = dict(zip(group_keys, key))
    entry["n"] = len(rs)
    for m in metrics:
      entry[m + "_mean"], entry[m + "_sd"] = mean_sd([float(r[m]) for r in rs])
    out.append(entry)
  return out


def batched_apply(fn, images, batch: int):
  """``fn`` over fixed-size batches of ``images`` (the last zero-padded, so ``fn`` compiles once);
  the outputs (an array or a dict of arrays) are concatenated and cut back to ``len(images)``."""
  import jax
  import numpy as np
  n = len(images)
  padded = np.concatenate([images, np.zeros((-n % batch,) + images.shape[1:], images.dtype)])
  outs = [jax.device_get(fn(padded[i:i + batch])) for i in range(0, len(padded), batch)]
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outs)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def pm(entry: dict, metric: str, fmt: str = "{:.3f}") -> str:
  return (fmt + " ± " + fmt).format(entry[metric + "_mean"], entry[metric + "_sd"])


# -- appended for the contrastive study -----------------------------------------------------------
def flatten(row: dict, sep: str = ".") -> dict:
  """Nested dicts of metrics as one flat dict: ``{"probe_acc": {"light": x}}`` -> ``probe_acc.light``
  (so ``summarize`` can average metrics keyed by attribute)."""
  out = {}
  for key, value in row.items():
    if isinstance(value, dict):
      out.update({f"{key}{sep}{k}": v for k, v in flatten(value, sep).items()})
    else:
      out[key] = value
  return out
