"""A study's command line: flags -> validated config -> (distributed start-up) -> main(cfg).

    config.define_flags(OrbitConfig)
    if __name__ == "__main__":
      cli.run(OrbitConfig, main)          # main(cfg) does the study

Every bad input becomes one line on stderr: a bad flag, a missing flagfile or an unreadable file
exits 2, a non-finite loss exits 3, and nothing is written before the config is valid.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging as std_logging
import os
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from experiments import config
from experiments import flagfiles
from experiments.config import fail
from invariance import storage

FLAGS = flags.FLAGS


class _QuietLibraries(std_logging.Filter):
  """Keep progress lines readable: drop orbax's INFO chatter (warnings and errors still show)."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def run(cls, main: Callable) -> None:
  """The absl entry point of a study whose config class is ``cls``."""

  def _main():
    # gcsfs (gs:// workdirs) logs its feature flags at import and, without default credentials,
    # a bucket-type probe per bucket: noise around the one-line errors; its errors still show.
    std_logging.getLogger("gcsfs").setLevel(std_logging.ERROR)
    cfg = config.from_flags(cls)
    import jax
    jax.config.update("jax_default_prng_impl", cfg.prng_impl)
    start_distributed(cfg)
    for name in getattr(cls, "DATA_PARALLEL", ()):
      check_data_parallel(name, getattr(cfg, name))
    if cfg.compile_cache:
      jax.config.update("jax_compilation_cache_dir", cfg.compile_cache)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    with local_data_dir(cfg) as cfg:
      main(cfg)

  run_main(_main)


def data_cache_root() -> str:
  """Where ``gs://`` data directories are mirrored ($INVARIANCE_DATA_CACHE, or under ~/.cache)."""
  return os.environ.get("INVARIANCE_DATA_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "invariance_lab", "data")


@contextlib.contextmanager
def local_data_dir(cfg):
  """``--data_dir=gs://bucket/path``: TFDS reads array_record files from local disk only, so the
  bucket folder is copied into a local mirror (files already there are kept), the study reads
  the mirror, and datasets it built there (the offline defaults, on first use) are copied up to
  the bucket afterwards by process 0. ``cfg`` with a local ``data_dir`` is what the study sees."""
  remote = getattr(cfg, "data_dir", None)
  if not storage.is_remote(remote):
    yield cfg
    return
  problem = storage.bucket_error(remote)
  if problem:
    fail("data_dir", remote, f"{problem}; allowed: a gs:// path in an existing bucket, or a local "
         "directory")
  local = os.path.join(data_cache_root(), remote[len(storage.REMOTE_PREFIX):])
  os.makedirs(local, exist_ok=True)
  logging.info("data_dir %s: %d files copied into the local mirror %s", remote,
               storage.download_tree(remote, local), local)
  yield dataclasses.replace(cfg, data_dir=local)
  import jax
  if jax.process_index() == 0:
    logging.info("data_dir %s: %d new files copied up from %s", remote,
                 storage.copy_tree(local, remote, only_new=True), local)


def run_main(main: Callable[[], None]) -> None:
  """``main()`` under absl (flags parsed, flagfiles read), every bad input one line on stderr:
  exit code 2, or 3 for a non-finite loss."""

  def _main(argv):
    if len(argv) > 1:
      fail("argv", " ".join(argv[1:]), "unexpected positional arguments")
    main()

  try:
    app.run(_main, flags_parser=_parse_flags)
  except (ValueError, OSError) as e:        # config.FlagError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)


def _parse_flags(argv):
  try:
    return FLAGS(flagfiles.resolve(argv))
  except flags.Error as e:
    print(f"error: {str(e).splitlines()[0].replace('ERROR:: ', '')}", file=sys.stderr)
    sys.exit(2)


def check_data_parallel(flag: str, value: int) -> int:
  """A global batch size: a multiple of the device count (every process's)."""
  import jax
  if value % jax.device_count():
    fail(flag, value, f"allowed: a multiple of the {jax.device_count()} devices (data parallel)")
  return value


def _env_int(flag: str, value, env: str):
  if value is None and os.environ.get(env):
    try:
      value = int(os.environ[env])
    except ValueError:
      fail(flag, os.environ[env], f"(from ${env}) allowed: an integer")
  return value


def start_distributed(cfg) -> None:
  """``--distributed``: join the other processes (before anything touches a jax backend)."""
  given = [n for n in ("coordinator_address", "num_processes", "process_id", "heartbeat_timeout")
           if FLAGS[n].present]
  if not cfg.distributed:
    if given:
      fail(given[0], FLAGS[given[0]].value, "allowed only with --distributed")
    return
  import jax
  from invariance import parallel
  address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  count = _env_int("num_processes", cfg.num_processes, "JAX_NUM_PROCESSES")
  index = _env_int("process_id", cfg.process_id, "JAX_PROCESS_ID")
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
  # CPU collectives across processes need gloo; GPUs and TPUs use their own (NCCL, ICI/DCN).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    # A process that stops on an error waits at most --heartbeat_timeout at exit for the others
    # (JAX's shutdown barrier); when that barrier fails, JAX stops every process.
    parallel.initialize_distributed(address, count, index,
                                    heartbeat_timeout_seconds=cfg.heartbeat_timeout,
                                    shutdown_timeout_seconds=cfg.heartbeat_timeout)
  except (RuntimeError, ValueError) as e:
    fail("coordinator_address", address or "(auto-detect)",
         f"jax.distributed.initialize failed ({str(e).splitlines()[0][:200]}); allowed: the "
         "host:port of process 0, reachable from every process, with every process started")
  logging.info("distributed: process %d of %d, %d local / %d global devices (a dead peer stops "
               "every process after %d s without heartbeats)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               cfg.heartbeat_timeout)


def check_memory(flag: str, value, nbytes: float, limit_bytes: float | None = None) -> None:
  """Refuse a size whose estimated memory cannot fit, before any work (one line with the
  estimate). ``limit_bytes`` defaults to this machine's physical memory."""
  if limit_bytes is None:
    limit_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if nbytes > limit_bytes:
    fail(flag, value, f"needs an estimated {nbytes / 2**30:.3g} GiB, more than the "
         f"{limit_bytes / 2**30:.3g} GiB this machine has; allowed: a smaller value")
