"""Running a study's CLI from a test, as a user would (one shared helper for every study)."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Study subprocesses that keep XLA's default optimisation level: the orbit smoke run trains 12
# models for 200-800 steps each, where level 0's slower code costs more than its faster compile
# (measured on the 2-core VM: 92 CPU-s at level 0, 57 at the default level). Every run whose rows
# are compared with the orbit smoke run's (resume, Cloud Storage) is an orbit run, so all match.
DEFAULT_LEVEL_STUDIES = ("orbit",)


def env(study: str = ""):
  """Environment for a study subprocess: one CPU device (a user's laptop; data parallelism over
  8 devices is tested in tests/test_train.py) and, except for ``DEFAULT_LEVEL_STUDIES``, LLVM
  optimisation off: those smoke runs are dominated by compiling small programs once each, which
  level 0 does about twice as fast."""
  xla = [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not f.startswith(("--xla_force_host_platform_device_count",
                              "--xla_backend_optimization_level"))]
  if study not in DEFAULT_LEVEL_STUDIES:
    xla.append("--xla_backend_optimization_level=0")
  return dict(os.environ, XLA_FLAGS=" ".join(xla))


def popen(study: str, *args, merge_stderr: bool = False):
  """Start ``python -m experiments.<study> ARGS`` with the session's compilation cache."""
  cmd = [sys.executable, "-m", f"experiments.{study}", *args]
  if study != "bench":                      # the studies' run option (the bench has no cache)
    cmd.append(f"--compile_cache={os.environ['INVARIANCE_TEST_CACHE']}")
  return subprocess.Popen(cmd, cwd=ROOT, env=env(study), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True)


def run_ok(study: str, *args, timeout: float = 600) -> str:
  """Run the study to the end (stdout and stderr merged) and return its output; it must exit 0."""
  proc = popen(study, *args, merge_stderr=True)
  out = proc.communicate(timeout=timeout)[0]
  assert proc.returncode == 0, out[-3000:]
  return out


def flag_error(cls, *args) -> str:
  """The one-line error the study's CLI would print for ``args`` (parsed and validated in this
  process: cheap, for the many bad-flag cases; a few go through ``popen`` to check the CLI
  itself), or "" when the flags are valid."""
  from absl import flags
  from experiments import config
  fv = flags.FlagValues()
  config.define_flags(cls, fv)
  fv(["prog", *args])
  try:
    config.from_flags(cls, fv)
  except config.FlagError as e:
    return str(e)
  return ""


SMOKE_FLAGFILES = {"orbit": "experiments/configs/orbit_smoke.flags",
                   "contrastive": "experiments/configs/contrastive_smoke.flags",
                   "recover": "experiments/configs/recover_smoke.flags",
                   "pretrained": "experiments/configs/pretrained_smoke.flags",
                   "contrastive_suppression": "experiments/configs/contrastive_suppression_smoke.flags",
                   "contrastive_losses": "experiments/configs/contrastive_losses_smoke.flags"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# Two-process runs of the contrastive study (tests/test_distributed.py): one clip / p = 0 run of the
# smoke flagfile, to compare with the single-process smoke run's row of the same name.
DISTRIBUTED_ARGS = ("--losses=clip", "--mention_probs=0", "--policies=mention")
HEARTBEAT_TIMEOUT = 60             # the default: no false "task died" on a loaded machine
# The two-process smoke run's heartbeat, which is also its shutdown barrier's timeout: its
# processes compute the probes of each row apart (no collective), so under CI's load (a dozen
# processes on 2 cores) one reached the shutdown barrier more than 60 s after the other and the
# pair aborted. Nothing in that run waits on a dead peer, so a long timeout costs nothing.
DISTRIBUTED_SMOKE_HEARTBEAT = 300
PEER_DEATH_HEARTBEAT = 5
PEER_DEATH_STEPS = 100_000          # the survivor must stop because its peer died, not finish


def _kill_when(log_path: str, pattern: str, proc: subprocess.Popen, record: dict):
  """Watch ``log_path``; SIGKILL ``proc`` once ``pattern`` appears (time of the kill in record)."""
  while proc.poll() is None:
    with open(log_path) as f:
      if re.search(pattern, f.read()):
        proc.send_signal(signal.SIGKILL)
        record["killed_at"] = time.monotonic()
        return
    time.sleep(0.2)


class SmokeRuns:
  """Every study's smoke run and the two-process runs, started together (``start``; tests/conftest.py
  starts them as collection ends and runs the files that read them last).

  XLA compiles on one thread and the smoke runs are mostly compiling (the peer-death run mostly
  waits for a heartbeat timeout), so on a 2-core machine they keep the second core busy while the
  in-process tests run on the first. Output goes to files (pipes that nobody reads while another
  run is awaited could fill up and stall a run).
  """

  def __init__(self, base_dir: str):
    self.base_dir, self.procs, self.peer_death, self.exited_at = base_dir, {}, {}, {}

  def _start(self, name: str, study: str, flagfile: str, *args, workdir=None):
    workdir = workdir or os.path.join(self.base_dir, name)
    log = open(os.path.join(self.base_dir, name + ".log"), "w")
    cmd = [sys.executable, "-m", f"experiments.{study}", f"--flagfile={flagfile}",
           f"--workdir={workdir}", f"--compile_cache={os.environ['INVARIANCE_TEST_CACHE']}", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(study), stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    self.procs[name] = (proc, workdir, log)
    threading.Thread(target=lambda: (proc.wait(), self.exited_at.setdefault(name, time.monotonic())),
                     daemon=True).start()

  def _start_pair(self, name: str, *args, heartbeat: int = HEARTBEAT_TIMEOUT):
    """Processes ``name/0`` and ``name/1`` of one ``--distributed`` contrastive run."""
    os.makedirs(os.path.join(self.base_dir, name), exist_ok=True)
    workdir = os.path.join(self.base_dir, name, "workdir")
    address = f"127.0.0.1:{free_port()}"
    for i in range(2):
      self._start(f"{name}/{i}", "contrastive", SMOKE_FLAGFILES["contrastive"],
                  *DISTRIBUTED_ARGS, "--distributed", f"--coordinator_address={address}",
                  "--num_processes=2", f"--process_id={i}",
                  f"--heartbeat_timeout={heartbeat}", *args, workdir=workdir)

  def start(self):
    for study, flagfile in SMOKE_FLAGFILES.items():
      self._start(study, study, flagfile)
    self._start_pair("distributed", heartbeat=DISTRIBUTED_SMOKE_HEARTBEAT)
    # Process 1 is killed as soon as both have joined (its "distributed:" line): process 0 goes
    # on alone into the study and its first collective (the peer dying mid-training was checked by
    # hand: same message, same bound). Killing it later would only add compile time to the suite.
    self._start_pair("peer_death", f"--steps={PEER_DEATH_STEPS}", heartbeat=PEER_DEATH_HEARTBEAT)
    victim, _, log = self.procs["peer_death/1"]
    threading.Thread(target=_kill_when, args=(log.name, r"distributed: process 1 of 2", victim,
                                              self.peer_death), daemon=True).start()

  def stop(self):
    """Kill every run still going (the end of the session)."""
    for proc, _, log in self.procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      log.close()

  def get(self, name: str, timeout: float = 600):
    """(workdir, return code, combined output) of the finished run ``name`` (a study, or
    ``distributed/<i>`` / ``peer_death/<i>``)."""
    if not self.procs:
      self.start()
    proc, workdir, log = self.procs[name]
    proc.wait(timeout=timeout)
    log.close()
    with open(log.name) as f:
      return workdir, proc.returncode, f.read()

  def workdir(self, study: str) -> str:
    """The workdir of ``study``'s smoke run, asserting that the run succeeded."""
    workdir, returncode, output = self.get(study)
    assert returncode == 0, output[-3000:]
    return workdir
