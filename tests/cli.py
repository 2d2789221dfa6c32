"""Running a study's CLI from a test, as a user would (one shared helper for every study)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
  """Environment for a study subprocess: one CPU device (a user's laptop; data parallelism over
  8 devices is tested in tests/test_train.py) and LLVM optimisation off. The smoke runs are
  dominated by compiling small programs once each and level 0 compiles them about twice as fast;
  these tests check plumbing and schemas, not accuracies."""
  xla = [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
  return dict(os.environ, XLA_FLAGS=" ".join(xla + ["--xla_backend_optimization_level=0"]))


def popen(study: str, *args, merge_stderr: bool = False):
  """Start ``python -m experiments.<study> ARGS`` with the session's compilation cache."""
  cmd = [sys.executable, "-m", f"experiments.{study}", *args,
         f"--compile_cache={os.environ['INVARIANCE_TEST_CACHE']}"]
  return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True)
