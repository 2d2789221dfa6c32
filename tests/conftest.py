"""pytest setup: 8 virtual CPU devices for every multi-device test, fast compiles.

XLA reads the flag when the backend starts, so it has to be set before jax is imported anywhere.
"""
import os

# XLA:CPU's LLVM optimisation off (level 0): the suite is dominated by compiling many small
# programs, which level 0 does in ~60% of the time; no test measures speed, and every tolerance
# holds (the study subprocesses in tests/cli.py run the same way). INVARIANCE_XLA_DEFAULT_OPT=1
# keeps XLA's default level instead, the one users run: CI runs the library unit tests once so.
_FLAGS = ["--xla_force_host_platform_device_count=8"]
if os.environ.get("INVARIANCE_XLA_DEFAULT_OPT", "0") != "1":
  _FLAGS.append("--xla_backend_optimization_level=0")
for _flag in _FLAGS:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Threefry's unrolled rounds dominate XLA:CPU compile time of every small `init` (~5 s each here);
# the RBG generator compiles in a fraction of that. Tests only need seeded determinism, not a
# particular stream, so the suite uses it (subprocesses started by CLI tests inherit it).
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")

# One persistent XLA compilation cache for the session: the CLI tests run the same programs
# several times (smoke, rerun, resume), and later runs load them instead of recompiling.
import tempfile  # noqa: E402

os.environ.setdefault("INVARIANCE_TEST_CACHE", tempfile.mkdtemp(prefix="invariance-jax-cache-"))
# TFDS datasets the tests build (the digits, the scenes) go to a per-session directory, never the
# user's ~/tensorflow_datasets; study subprocesses inherit it.
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="invariance-tfds-"))

import shutil  # noqa: E402

import pytest  # noqa: E402

_SMOKE = "smoke_runs"
_smoke_runs = None       # tests/cli.SmokeRuns, started when collection ends


def _reads_smoke_runs(item) -> bool:
  return _SMOKE in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
  """Test files that read the shared smoke runs go last (every file keeps its own order), so the
  runs, started in the background when collection ends, use the second core while the in-process
  tests run on the first; by the time those files come up, their runs have mostly finished."""
  late = {item.path for item in items if _reads_smoke_runs(item)}
  items[:] = [i for i in items if i.path not in late] + [i for i in items if i.path in late]


def pytest_collection_finish(session):
  global _smoke_runs
  if session.config.option.collectonly or not any(map(_reads_smoke_runs, session.items)):
    return
  from tests import cli
  _smoke_runs = cli.SmokeRuns(tempfile.mkdtemp(prefix="invariance-smoke-runs-"))
  _smoke_runs.start()


def pytest_sessionfinish(session):
  if _smoke_runs is not None:
    _smoke_runs.stop()
    shutil.rmtree(_smoke_runs.base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_runs():
  """The studies' smoke runs (see tests/cli.py), started once per session as collection ends."""
  assert _smoke_runs is not None, "started in pytest_collection_finish for every test using it"
  return _smoke_runs
