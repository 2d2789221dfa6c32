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


SMOKE_FLAGFILES = {"orbit": "experiments/configs/orbit_smoke.flags",
                   "contrastive": "experiments/configs/contrastive_smoke.flags",
                   "recover": "experiments/configs/recover_smoke.flags"}


class SmokeRuns:
  """Every study's smoke run, started together the first time any one is asked for.

  XLA compiles on one thread and the smoke runs are mostly compiling, so on a 2-core machine the
  three finish in about half the time they take one after another. Output goes to files (pipes
  that nobody reads while another run is awaited could fill up and stall a run).
  """

  def __init__(self, base_dir: str):
    self.base_dir, self.procs = base_dir, {}

  def _start_all(self):
    for study, flagfile in SMOKE_FLAGFILES.items():
      workdir = os.path.join(self.base_dir, study)
      log = open(os.path.join(self.base_dir, study + ".log"), "w")
      cmd = [sys.executable, "-m", f"experiments.{study}", f"--flagfile={flagfile}",
             f"--workdir={workdir}", f"--compile_cache={os.environ['INVARIANCE_TEST_CACHE']}"]
      self.procs[study] = (subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=log,
                                            stderr=subprocess.STDOUT, text=True), workdir, log)

  def get(self, study: str, timeout: float = 600):
    """(workdir, return code, combined output) of ``study``'s finished smoke run."""
    if not self.procs:
      self._start_all()
    proc, workdir, log = self.procs[study]
    proc.wait(timeout=timeout)
    log.close()
    with open(log.name) as f:
      return workdir, proc.returncode, f.read()

  def workdir(self, study: str) -> str:
    """The workdir of ``study``'s smoke run, asserting that the run succeeded."""
    workdir, returncode, output = self.get(study)
    assert returncode == 0, output[-3000:]
    return workdir
