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

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
  """The three studies' smoke runs, run concurrently once per session (see tests/cli.py)."""
  from tests import cli
  runs = cli.SmokeRuns(str(tmp_path_factory.mktemp("smoke_runs")))
  yield runs
  runs.stop()
