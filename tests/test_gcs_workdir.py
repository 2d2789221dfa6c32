"""``--workdir=gs://...``: a study writes every file to Cloud Storage, is killed, resumes, and its
rows equal the local run's; a bucket that does not exist is one line. Against a Cloud Storage
emulator started by the test on 127.0.0.1 (``tests/gcs_emulator.py``), no network."""
import json
import os
import signal
import tempfile
import time

import pytest

from invariance import storage
from invariance import train
from tests import cli
from tests import events
from tests import gcs_emulator

SMOKE = cli.SMOKE_FLAGFILES["orbit"]
MODEL = "orbit_full"           # slow enough per step to be killed mid-training
BUCKET = "lab-bucket"


@pytest.fixture(scope="module")
def emulator():
  with gcs_emulator.running(BUCKET) as env:
    yield env


def _study(workdir, env, *args):
  return cli.popen("orbit", f"--flagfile={SMOKE}", f"--workdir={workdir}", f"--models={MODEL}",
                   *args, merge_stderr=True)


def _schedule():
  """(steps, checkpoint_every, log_every) of MODEL in the smoke flagfile: the kill comes at the
  first log line after the first checkpoint, and the resume must start from that checkpoint."""
  from absl import flags
  from experiments import config
  from experiments.orbit_config import OrbitConfig
  fv = flags.FlagValues()
  config.define_flags(OrbitConfig, fv)
  fv(["prog", f"--flagfile={os.path.join(cli.ROOT, SMOKE)}"])
  cfg = config.from_flags(OrbitConfig, fv)
  assert MODEL not in ",".join(cfg.model_steps) and cfg.checkpoint_every < cfg.steps
  return cfg.steps, cfg.checkpoint_every, cfg.log_every


def _strip(row):
  return {k: v for k, v in row.items() if "seconds" not in k}


def test_a_study_killed_and_resumed_on_gs_matches_the_local_run(emulator, smoke_runs, tmp_path,
                                                                monkeypatch):
  """Workdir and TFDS data dir on gs:// (the digits are built into the local mirror of the data
  dir on first use and copied up once the study finishes)."""
  local = smoke_runs.workdir("orbit")
  steps, every, log_every = _schedule()
  monkeypatch.setenv("INVARIANCE_DATA_CACHE", str(tmp_path / "mirror"))
  workdir, data_dir = f"gs://{BUCKET}/runs/orbit", f"gs://{BUCKET}/tfds"
  proc = _study(workdir, emulator, f"--data_dir={data_dir}")
  deadline, seen = time.time() + 300, []
  for line in proc.stdout:
    seen.append(line)
    if f"{MODEL}/seed0 step {every + log_every}/{steps}" in line or time.time() > deadline:
      break
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  gcs_emulator.forget_clients()
  assert storage.exists(f"{workdir}/flags.json"), "".join(seen)[-3000:]
  assert not storage.exists(f"{workdir}/results.json")

  resumed = _study(workdir, emulator, f"--data_dir={data_dir}")
  out, _ = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, out[-3000:]
  assert f"{MODEL}/seed0: resumed from checkpoint at step {every}" in out
  gcs_emulator.forget_clients()
  rows = json.loads(storage.read_text(f"{workdir}/results.json"))["rows"]
  with open(os.path.join(local, "results.json")) as f:
    local_rows = [r for r in json.load(f)["rows"] if r["model"] == MODEL]
  assert [_strip(r) for r in rows] == [_strip(r) for r in local_rows]
  # Every file of the workdir went to the bucket: flags, rows, results, figures, metrics, events,
  # checkpoints.
  names = set(storage.listdir(workdir))
  assert {"flags.json", "rows", "results.json", "results.md", "loss_curves.png", "metrics",
          "tensorboard", "checkpoints"} <= names, names
  assert storage.listdir(f"{workdir}/checkpoints/{MODEL}/0") == sorted([str(every), str(steps)])
  metrics = train.read_metrics(f"{workdir}/metrics/{MODEL}/seed0.jsonl")
  assert [r["step"] for r in metrics] == list(range(1, steps + 1))     # each step once
  curves = events.scalars(f"{workdir}/tensorboard/{MODEL}/seed0")
  assert [s for s, _ in curves["loss"]] == list(range(1, steps + 1))  # each step once
  assert not os.path.exists(os.path.join(cli.ROOT, "gs:"))             # nothing went local
  assert storage.listdir(data_dir) == ["sklearn_digits"]               # the built dataset, up


def test_a_bucket_that_does_not_exist_is_one_line(emulator):
  proc = _study("gs://no-such-bucket/run", emulator)
  out, _ = proc.communicate(timeout=120)
  lines = [line for line in out.strip().splitlines() if line.strip()]
  assert proc.returncode == 2 and len(lines) == 1, out[-2000:]
  assert lines[0].startswith("error: --workdir=gs://no-such-bucket/run: bucket "
                             "gs://no-such-bucket does not exist"), lines


def test_storage_on_gs_reads_what_it_wrote(emulator):
  """The path layer on its own: atomic writes, appends, listings; local paths are the control
  that takes the other branch with the same results."""
  for root in (f"gs://{BUCKET}/unit", None):
    root = root or tempfile.mkdtemp()
    storage.write_atomic(storage.join(root, "a", "x.json"), "1")
    storage.append(storage.join(root, "a", "m.jsonl"), "one\n")
    storage.append(storage.join(root, "a", "m.jsonl"), "two\n")
    assert storage.read_text(storage.join(root, "a", "m.jsonl")) == "one\ntwo\n"
    assert storage.listdir(storage.join(root, "a")) == ["m.jsonl", "x.json"]
    assert storage.isdir(storage.join(root, "a")) and storage.isfile(storage.join(root, "a",
                                                                                  "x.json"))
    assert not storage.exists(storage.join(root, "nothing"))
    assert storage.bucket_error(root) is None
  mirror = tempfile.mkdtemp()
  assert storage.download_tree(f"gs://{BUCKET}/unit", mirror) == 2           # a data dir's mirror
  assert open(os.path.join(mirror, "a", "m.jsonl")).read() == "one\ntwo\n"
  assert storage.download_tree(f"gs://{BUCKET}/unit", mirror) == 0           # kept, not re-read
  assert "does not exist" in storage.bucket_error("gs://no-such-bucket/x")


def test_the_workdir_contract_holds_on_gs(emulator):
  """Refuse other flags, compute a row once, name a damaged file: as on a local disk."""
  from experiments import config
  from experiments import workdir as workdir_lib
  path = f"gs://{BUCKET}/contract"
  w = workdir_lib.Workdir(path, "orbit", {"steps": 1})
  workdir_lib.Workdir(path, "orbit", {"steps": 1})                    # same flags: fine
  with pytest.raises(config.FlagError, match=r"different flags \(steps\)"):
    workdir_lib.Workdir(path, "orbit", {"steps": 2})
  calls = []
  assert w.row("mlp_seed0", lambda: calls.append(1) or {"acc": 0.5}) == {"acc": 0.5}
  assert w.row("mlp_seed0", lambda: calls.append(1) or {"acc": 0.7}) == {"acc": 0.5}
  assert calls == [1]
  storage.write_atomic(f"{path}/rows/mlp_seed0.json", "{not json")
  with pytest.raises(config.FlagError, match=r"mlp_seed0\.json is not valid JSON"):
    w.row("mlp_seed0", lambda: {"acc": 0.7})
  assert storage.read_text(f"{path}/rows/mlp_seed0.json") == "{not json"   # nothing overwritten
