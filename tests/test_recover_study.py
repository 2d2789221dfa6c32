"""The recovery study's CLI: smoke flagfile end to end (schema), starting from a contrastive-study
workdir's checkpoints, and bad flags failing in one line before any work."""
import json
import os
import shutil

from absl import flags
import pytest

from experiments import config
from tests import cli

SMOKE = "experiments/configs/recover_smoke.flags"
METHODS = ["probe", "probe_penultimate", "finetune", "lpft", "lastblock", "scratch"]
REFERENCES = ["p1_probe", "p1_probe_penultimate", "init_probe", "init_probe_penultimate"]
TRAINED = {"finetune", "lpft", "lastblock", "scratch"}


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
  # 6 methods + 4 reference curves, n in {8, 32}, seed 0.
  assert [r["method"] for r in rows if r["n_labels"] == 8] == METHODS + REFERENCES
  assert len(rows) == 20 and {r["n_labels"] for r in rows} == {8, 32}
  for r in rows:
    for key in ("method", "n_labels", "seed", "light_acc", "car_acc", "train_seconds"):
      assert key in r, (key, r)
    assert r["seed"] == 0 and 0.0 <= r["light_acc"] <= 1.0 and 0.0 <= r["car_acc"] <= 1.0
    if r["method"] in TRAINED:
      # Every learning rate's run is kept; the row is the one with the best validation accuracy.
      grid = r["lr_grid"]
      assert [g["learning_rate"] for g in grid] == [1e-3, 3e-3]
      best = max(grid, key=lambda g: g["val_acc"])
      assert r["val_acc"] == best["val_acc"] and r["light_acc"] == best["light_acc"]
      assert r["learning_rate"] in (1e-3, 3e-3) and 0 <= r["best_step"] <= r["last_step"] <= 6
      for lr in (1e-3, 3e-3):          # its curve, validation included, is in metrics/
        with open(os.path.join(smoke, "metrics", f"{r['method']}_n{r['n_labels']}_lr{lr:g}",
                               "seed0.jsonl")) as f:
          assert any("val" in json.loads(line) for line in f)
    else:
      assert r["tower"] == {"probe": "p0", "p1": "p1", "init": "init"}[r["method"].split("_")[0]]
  # Re-captioning: 3 starts x f = 0.5 x steps {0, 2, 4}; step 0 is the start tower's probe.
  rec = results["recaption_rows"]
  assert [(r["start"], r["steps"]) for r in rec] == [
      (s, k) for s in ("p0", "init", "p1") for k in (0, 2, 4)]
  assert all(r["captions_seen"] == 32 * r["steps"] for r in rec)
  assert all(0 < r["light_captions_seen"] < r["captions_seen"] for r in rec if r["steps"])
  probe32 = {r["method"]: r["light_acc"] for r in rows if r["n_labels"] == 32}
  for start, curve in (("p0", "probe"), ("p1", "p1_probe"), ("init", "init_probe")):
    assert [r["light_acc"] for r in rec if (r["start"], r["steps"]) == (start, 0)] == [
        probe32[curve]]
  assert set(results["smallest_n"]) == set(METHODS + REFERENCES)
  assert {"grid", "per_seed", "reached", "geo_mean", "low", "high"} <= set(
      results["smallest_n"]["finetune"])
  assert isinstance(results["collapsed"], list) and len(results["monotone"]) == 4
  assert [(p["tower"], p["source"]) for p in results["pretrain"]] == [
      ("p0", "pretrained here"), ("p1", "pretrained here")]
  md = open(os.path.join(smoke, "results.md")).read()
  for needle in ("| method | n = 8 | n = 32 | smallest n for 90%", "## Runs flagged as collapsed",
                 "## Learning rates chosen on validation", "## Matched-step re-captioning",
                 "## Reading"):
    assert needle in md, needle
  for png in ("labels_to_recover.png", "recaption_steps.png", "loss_curves.png"):
    assert os.path.getsize(os.path.join(smoke, png)) > 0
  # p0 and p1 sit where a contrastive-study workdir keeps them; re-caption runs have their own.
  assert {"clip_p0_d4", "clip_p1_d4", "recaption_p0_f0.5", "recaption_init_f0.5"} <= set(
      os.listdir(os.path.join(smoke, "checkpoints")))


def test_starts_from_a_contrastive_study_workdir(smoke, tmp_path):
  """A workdir laid out as experiments.contrastive leaves it (flags.json ``steps`` a list of
  training lengths, checkpoints at the largest): probes on the loaded p0 and p1 towers give
  exactly the smoke run's probe rows (same weights), and nothing is pretrained."""
  contrastive = tmp_path / "contrastive"
  for run in ("clip_p0_d4", "clip_p1_d4"):
    shutil.copytree(os.path.join(smoke, "checkpoints", run), contrastive / "checkpoints" / run)
  (contrastive / "flags.json").write_text(json.dumps(
      {"losses": ["clip"], "mention_probs": [0, 1], "embed_dims": [4], "steps": [6, 12],
       "seeds": [0]}))
  workdir = tmp_path / "loaded"
  proc = _cli(f"--workdir={workdir}", f"--pretrained_workdir={contrastive}",
              "--methods=probe,probe_penultimate", "--references=p1", "--recaption_starts=")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "clip_p0_d4/seed0 step" not in err and "clip_p1_d4/seed0 step" not in err
  loaded = _load(workdir)
  assert [p["source"] for p in loaded["pretrain"]] == [
      str(contrastive / "checkpoints" / run / "0") for run in ("clip_p0_d4", "clip_p1_d4")]
  assert loaded["recaption_rows"] == []
  key = lambda r: (r["method"], r["n_labels"], r["seed"], r["light_acc"], r["car_acc"])
  expected = [key(r) for r in _load(smoke)["rows"]
              if r["method"] in ("probe", "probe_penultimate", "p1_probe", "p1_probe_penultimate")]
  assert sorted(key(r) for r in loaded["rows"]) == sorted(expected)


def _parse(*argv):
  from experiments import recover_config
  fv = flags.FlagValues()
  config.define_flags(recover_config.RecoverConfig, fv)
  fv(["prog", f"--flagfile={os.path.join(cli.ROOT, SMOKE)}", *argv])
  return config.from_flags(recover_config.RecoverConfig, fv)


@pytest.mark.parametrize("arg, needle", [
    ("--learning_rates=1e-3,0", "--learning_rates=1e-3,0: allowed: comma-separated numbers > 0"),
    ("--learning_rates=", "--learning_rates=: allowed: comma-separated numbers > 0 and <= 1.0, at "
     "least one"),
    ("--recaption_steps=50,0", "--recaption_steps=50,0: allowed: comma-separated integers >= 1"),
    ("--recaption_steps=50,50", "distinct"),
    ("--references=p2", "--references=p2: unknown 'p2'; allowed: one or more of p1, init"),
    ("--recaption_starts=p0,p5", "unknown 'p5'; allowed: one or more of p0, init, p1"),
    ("--methods=probe,recaption", "unknown 'recaption'"),
    ("--early_stopping_every=0", "--early_stopping_every=0: allowed: an integer >= 1"),
    ("--early_stopping_every=7", "--early_stopping_every=7: allowed: <= --tune_steps=6"),
    ("--early_stopping_patience=0", "--early_stopping_patience=0: allowed: an integer >= 1"),
    ("--recaption_warmup_steps=2", "--recaption_warmup_steps=2: allowed: < the smallest "
     "--recaption_steps (2)"),
    ("--num_val=4", "--num_val=4: allowed: an integer >= 8"),
])
def test_new_flags_are_one_line_errors(arg, needle):
  with pytest.raises(config.FlagError) as e:
    _parse(arg)
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_empty_references_and_starts_are_allowed():
  cfg = _parse("--references=", "--recaption_starts=", "--early_stopping_every=99",
               "--methods=probe")              # no trained method: the cap does not apply
  assert cfg.references == () and cfg.recaption_starts == () and not cfg.uses_p1


BAD = [  # (flag named in the error, arguments)
    ("methods", ["--methods=probe,distill"]),
    ("learning_rates", ["--learning_rates=1e-3,-1"]),
    ("pretrained_workdir", ["--pretrained_workdir=/no/such/contrastive/workdir"]),
    ("flagfile", ["--flagfile=experiments/configs/no_such.flags"]),
    ("embed_dim", ["--embed_dim=999999999999999999999999999999"]),    # states the estimate
]


def _damaged_contrastive_workdir(path):
  """A contrastive-study workdir whose p = 0 checkpoint is there but unreadable."""
  for run in ("clip_p0_d4", "clip_p1_d4"):
    step_dir = path / "checkpoints" / run / "0" / "12"
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
