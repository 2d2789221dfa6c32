"""The recovery study's CLI: smoke flagfile end to end (schema), starting from a contrastive-study
workdir's checkpoint, and bad flags failing in one line before any work."""
import json
import os
import shutil

import pytest

from tests import cli

SMOKE = "experiments/configs/recover_smoke.flags"
METHODS = {"probe", "probe_penultimate", "finetune", "recaption", "scratch"}


def _cli(*args):
  return cli.popen("recover", f"--flagfile={SMOKE}", *args)


def _load(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def smoke(smoke_runs):
  return smoke_runs.workdir("recover")


def test_smoke_flagfile_end_to_end(smoke):
  results = _load(smoke)
  assert results["study"] == "recover"
  rows = results["rows"]
  assert {r["method"] for r in rows} == METHODS
  # 4 methods + 1 recaption fraction, n in {8, 32}, seed 0.
  assert len(rows) == 10 and {r["n_labels"] for r in rows} == {8, 32}
  for r in rows:
    for key in ("method", "n_labels", "seed", "light_acc", "car_acc", "train_seconds"):
      assert key in r, (key, r)
    assert r["seed"] == 0 and 0.0 <= r["light_acc"] <= 1.0 and 0.0 <= r["car_acc"] <= 1.0
    assert ("recaption_fraction" in r) == (r["method"] == "recaption")
  assert {r["recaption_fraction"] for r in rows if r["method"] == "recaption"} == {0.5}
  assert set(results["smallest_n"]) == {"probe", "probe_penultimate", "finetune",
                                        "recaption f=0.5", "scratch"}
  assert all(n is None or n in (8, 32) for n in results["smallest_n"].values())
  assert [p["source"] for p in results["pretrain"]] == ["pretrained here"]
  assert results["recaption_runs"][0]["mentions"] > 0          # some captions mention the light
  assert {"curve", "n_labels", "light_acc_mean", "light_acc_sd", "car_acc_mean"} <= set(
      results["summary"][0])
  md = open(os.path.join(smoke, "results.md")).read()
  assert "| method | n = 8 | n = 32 | n for 90% |" in md and "## Reading" in md
  assert os.path.getsize(os.path.join(smoke, "labels_to_recover.png")) > 0
  assert os.path.getsize(os.path.join(smoke, "loss_curves.png")) > 0
  # The p = 0 model sits where a contrastive-study workdir keeps it; every tuned run has its own.
  assert {"clip_p0_d4", "recaption_f0.5", "finetune_n8", "scratch_n32"} <= set(
      os.listdir(os.path.join(smoke, "checkpoints")))


def test_starts_from_a_contrastive_study_workdir(smoke, tmp_path):
  """A workdir laid out as experiments.contrastive leaves it: probes on the loaded p = 0 model give
  exactly the smoke run's probe rows (same weights), and nothing is pretrained."""
  contrastive = tmp_path / "contrastive"
  shutil.copytree(os.path.join(smoke, "checkpoints", "clip_p0_d4"),
                  contrastive / "checkpoints" / "clip_p0_d4")
  (contrastive / "flags.json").write_text(json.dumps(
      {"losses": ["clip"], "mention_probs": ["0", "1"], "embed_dims": ["4"], "steps": 12,
       "seeds": ["0"]}))
  workdir = tmp_path / "loaded"
  proc = _cli(f"--workdir={workdir}", f"--pretrained_workdir={contrastive}",
              "--methods=probe,probe_penultimate")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "clip_p0_d4/seed0 step" not in err                    # no pretraining steps ran
  loaded = _load(workdir)
  assert loaded["pretrain"][0]["source"].endswith(os.path.join("clip_p0_d4", "0"))
  key = lambda r: (r["method"], r["n_labels"], r["seed"], r["light_acc"], r["car_acc"])
  expected = [key(r) for r in _load(smoke)["rows"] if r["method"].startswith("probe")]
  assert sorted(key(r) for r in loaded["rows"]) == sorted(expected)


BAD = [  # (flag named in the error, arguments)
    ("methods", ["--methods=probe,distill"]),
    ("recaption_fractions", ["--recaption_fractions=0.1,2"]),
    ("pretrained_workdir", ["--pretrained_workdir=/no/such/contrastive/workdir"]),
    ("flagfile", ["--flagfile=experiments/configs/no_such.flags"]),
    ("embed_dim", ["--embed_dim=999999999999999999999999999999"]),    # states the estimate
]


def _damaged_contrastive_workdir(path):
  """A contrastive-study workdir whose p = 0 checkpoint is there but unreadable."""
  step_dir = path / "checkpoints" / "clip_p0_d4" / "0" / "12"
  step_dir.mkdir(parents=True)
  (step_dir / "junk").write_text("not a checkpoint")
  (path / "flags.json").write_text(json.dumps(
      {"losses": ["clip"], "mention_probs": [0.0, 1.0], "embed_dims": [4], "steps": 12}))
  return path


def test_bad_flags_fail_in_one_line_and_leave_the_workdir_alone(smoke, tmp_path):
  before = {name: open(os.path.join(smoke, name), "rb").read()
            for name in ("results.json", "results.md", "flags.json")}
  listing = sorted(os.listdir(smoke))
  # All bad invocations at once (each is mostly interpreter and jax start-up); the last one reads
  # an unreadable pretrained checkpoint, which must happen before its new workdir is created.
  procs = [(flag, _cli(f"--workdir={smoke}", *args)) for flag, args in BAD]
  damaged, fresh = _damaged_contrastive_workdir(tmp_path / "contrastive"), tmp_path / "fresh"
  unreadable = _cli(f"--workdir={fresh}", f"--pretrained_workdir={damaged}", "--methods=probe")
  for flag, proc in procs:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, flag
    lines = err.strip().splitlines()
    assert len(lines) == 1, (flag, err)
    assert lines[0].startswith("error:") and flag in lines[0], (flag, lines[0])
    assert flag != "embed_dim" or "GiB" in lines[0], lines[0]
  assert sorted(os.listdir(smoke)) == listing
  for name, data in before.items():
    assert open(os.path.join(smoke, name), "rb").read() == data, name
  _, err = unreadable.communicate(timeout=120)
  assert unreadable.returncode == 2, err[-2000:]
  last = err.strip().splitlines()[-1]       # after jax's and orbax's start-up lines
  assert last.startswith(f"error: --pretrained_workdir={damaged}") and "unreadable" in last, last
  assert not fresh.exists()
