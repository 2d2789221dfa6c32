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
METHODS = ["probe", "probe_penultimate", "finetune", "lpft", "lastblock", "scratch",
           "finetune_p1", "lastblock_init"]
REFERENCES = ["p1_probe", "p1_probe_penultimate", "init_probe", "init_probe_penultimate"]
TRAINED = {"finetune": "p0", "lpft": "p0", "lastblock": "p0", "scratch": "init",
           "finetune_p1": "p1", "lastblock_init": "init"}


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
  # 8 methods + 4 reference curves, n in {8, 32}, seed 0.
  assert [r["method"] for r in rows if r["n_labels"] == 8] == METHODS + REFERENCES
  assert len(rows) == 24 and {r["n_labels"] for r in rows} == {8, 32}
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
      # Its validation scenes are counted in n: a quarter of them (at least one) validate.
      assert (r["n_fit"], r["n_val"]) == {8: (6, 2), 32: (24, 8)}[r["n_labels"]]
      assert r["tower"] == TRAINED[r["method"]]
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
  assert isinstance(results["collapsed"], list) and len(results["monotone"]) == 6
  # Paired differences, per seed, one Holm family each (one seed here: no interval).
  fam = results["paired"]
  assert [(e["a"], e["b"], e["x"]) for e in fam["trained"]][:2] == [
      ("finetune", "scratch", 8), ("finetune", "scratch", 32)]
  assert len(fam["probes"]) == 8 and len(fam["trained"]) == 10 and len(fam["recaption"]) == 4
  by = {(r["method"], r["n_labels"]): r["light_acc"] for r in rows}
  for e in fam["probes"] + fam["trained"]:
    assert e["mean"] == pytest.approx(by[(e["a"], e["x"])] - by[(e["b"], e["x"])])
  assert results["timing"]["rows"] == 2 + 24 + 9
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
    ("--eval_every=0", "--eval_every=0: allowed: an integer >= 1"),
    ("--eval_every=7", "--eval_every=7: allowed: <= --tune_steps=6"),
    ("--patience=0", "--patience=0: allowed: an integer >= 1"),
    ("--min_delta=-0.1", "--min_delta=-0.1: allowed: a number >= 0.0 and <= 1.0"),
    ("--val_fraction=0", "--val_fraction=0.0: allowed: a number > 0 and <= 0.5"),
    ("--val_fraction=0.75", "--val_fraction=0.75: allowed: a number > 0 and <= 0.5"),
    ("--n_labels=1,8", "--n_labels=1,8: allowed: every n >= 2 with trained methods"),
    ("--recaption_warmup_steps=2", "--recaption_warmup_steps=2: allowed: < the smallest "
     "--recaption_steps (2)"),
])
def test_new_flags_are_one_line_errors(arg, needle):
  with pytest.raises(config.FlagError) as e:
    _parse(arg)
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_empty_references_and_starts_are_allowed():
  cfg = _parse("--references=", "--recaption_starts=", "--eval_every=99", "--n_labels=1,8",
               "--methods=probe")      # no trained method: the cap and the split do not apply
  assert cfg.references == () and cfg.recaption_starts == () and cfg.towers == ("p0",)
  assert _parse("--methods=probe,finetune_p1", "--references=", "--recaption_starts=").towers == (
      "p0", "p1")


def test_the_default_flagfile_is_the_config_default():
  """recover.flags holds only its header and --workdir: it parses to the dataclass defaults."""
  from experiments import recover_config
  fv = flags.FlagValues()
  config.define_flags(recover_config.RecoverConfig, fv)
  fv(["prog", f"--flagfile={os.path.join(cli.ROOT, 'experiments/configs/recover.flags')}"])
  cfg = config.from_flags(recover_config.RecoverConfig, fv)
  assert cfg == recover_config.RecoverConfig(workdir="workdir/recover")
  assert cfg.n_labels == (32, 128, 512) and cfg.seeds == (0, 1, 2, 3, 4)
  assert (cfg.eval_every, cfg.patience, cfg.min_delta) == (25, 8, 0.005)
  assert cfg != recover_config.RecoverConfig(workdir="workdir/recover", n_labels=(32, 128))


def test_validation_labels_are_counted_in_n():
  from experiments import recover_config
  cfg = recover_config.RecoverConfig()
  assert [cfg.split(n) for n in (2, 8, 32, 128, 512)] == [(1, 1), (6, 2), (24, 8), (96, 32),
                                                          (384, 128)]


def test_non_finite_features_are_the_one_line_exit_3_error():
  """A run whose parameters diverged (finite loss) must not hand NaN to scikit-learn: the
  FloatingPointError the CLI turns into exit 3; finite features (the control) pass."""
  import numpy as np
  from experiments import recover_rows
  ok = {"pool": np.ones((4, 3)), "test": np.zeros((2, 3))}
  recover_rows.finite(ok, "run")
  with pytest.raises(FloatingPointError, match="^run: features of test are not finite") as e:
    recover_rows.finite({**ok, "test": np.array([[1.0, np.nan, 0.0]])}, "run")
  assert "\n" not in str(e.value)
  with pytest.raises(FloatingPointError):
    recover_rows.finite({**ok, "pool": np.full((4, 3), np.inf)}, "run")


def test_paired_families_against_hand_computed_values():
  """Two seeds: the per-seed differences, their t-interval (t(0.975, 1) = 12.706) and Holm across
  the family, computed by hand; curves or seeds missing on one side are left out."""
  from experiments import recover_report
  values = {("a", 1): {0: 0.9, 1: 0.8}, ("b", 1): {0: 0.5, 1: 0.6},
            ("a", 2): {0: 0.7, 1: 0.7}, ("b", 2): {0: 0.6, 1: 0.8, 2: 0.1}}
  fam = recover_report.paired_family(values, [("a", "b"), ("a", "c")], [1, 2])
  assert [(e["a"], e["b"], e["x"]) for e in fam] == [("a", "b", 1), ("a", "b", 2)]
  one, two = fam
  assert one["mean"] == pytest.approx(0.3) and two["mean"] == pytest.approx(0.0)
  assert one["sd"] == pytest.approx(0.1 * 2 ** 0.5)          # differences 0.4 and 0.2
  assert one["ci"] == pytest.approx(12.7062047 * 0.1 * 2 ** 0.5 / 2 ** 0.5)
  assert two["n"] == 2 and two["p"] == pytest.approx(1.0)     # differences 0.1 and -0.1
  # one: t = 0.3 / 0.1 = 3 with 1 dof, p = 2 * (1/2 - atan(3) / pi) = 0.2048; Holm x 2.
  assert one["p"] == pytest.approx(0.204833, abs=1e-6)
  assert one["p_holm"] == pytest.approx(2 * 0.204833, abs=1e-6) and not one["survives"]
  assert recover_report.fmt_diff(one) == "+0.300 ± 1.271"
  assert not recover_report.excludes_zero(one)
  assert recover_report.excludes_zero(dict(one, ci=0.2)) and "†" in recover_report.fmt_diff(
      dict(one, survives=True))


BAD = [  # (flag named in the error, arguments): refused by the config, checked in-process
    ("methods", ["--methods=probe,distill"]),
    ("learning_rates", ["--learning_rates=1e-3,-1"]),
    ("embed_dim", ["--embed_dim=999999999999999999999999999999"]),    # states the estimate
    ("recaption_learning_rate", ["--recaption_learning_rate=" + "9" * 30]),
]
CLI_BAD = [  # through the command line (exit code, one line, the workdir untouched)
    ("methods", ["--methods=probe,distill"]),                          # a config error
    ("pretrained_workdir", ["--pretrained_workdir=/no/such/contrastive/workdir"]),
    ("flagfile", ["--flagfile=experiments/configs/no_such.flags"]),
]


def test_bad_flags_are_refused_naming_the_flag():
  from experiments.recover_config import RecoverConfig
  for flag, args in BAD:
    message = cli.flag_error(RecoverConfig, f"--flagfile={SMOKE}", *args)
    assert message.startswith(f"--{flag}=") and "\n" not in message, (flag, message)
    assert flag != "embed_dim" or "GiB" in message, message
  assert cli.flag_error(RecoverConfig, f"--flagfile={SMOKE}") == ""        # the control


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
  procs = [(flag, _cli(f"--workdir={smoke}", *args)) for flag, args in CLI_BAD]
  damaged, fresh = _damaged_contrastive_workdir(tmp_path / "contrastive"), tmp_path / "fresh"
  unreadable = _cli(f"--workdir={fresh}", f"--pretrained_workdir={damaged}", "--methods=probe")
  for flag, proc in procs:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, flag
    lines = err.strip().splitlines()
    assert len(lines) == 1, (flag, err)
    assert lines[0].startswith("error:") and flag in lines[0], (flag, lines[0])
  assert sorted(os.listdir(smoke)) == listing
  for name, data in before.items():
    assert open(os.path.join(smoke, name), "rb").read() == data, name
  _, err = unreadable.communicate(timeout=120)
  assert unreadable.returncode == 2, err[-2000:]
  last = err.strip().splitlines()[-1]       # after jax's and orbax's start-up lines
  assert last.startswith(f"error: --pretrained_workdir={damaged}") and "unreadable" in last, last
  assert not fresh.exists()


def test_the_study_page_is_generated_from_saved_results(smoke):
  """document() renders from a results.json alone (as docs/results keeps it): commands, the
  methods from their recipes, every table, and numbers that are the saved ones."""
  from experiments import recover_report
  results = _load(smoke)
  page = recover_report.document({"recover_default": results})
  for needle in ("python -m experiments.recover --flagfile=experiments/configs/recover.flags "
                 "--pretrained_workdir=workdir/contrastive", "- `lastblock_init`: the init tower",
                 "### Paired differences: frozen probes", "### Paired differences: trained methods",
                 "| `finetune` - `scratch` |", "### Reading (generated from the numbers)"):
    assert needle in page, needle
  probe = next(r for r in results["rows"] if r["method"] == "probe" and r["n_labels"] == 32)
  assert "| probe | " in page and f"{probe['light_acc']:.3f}" in page
  assert f"{results['timing']['wall_seconds']:.0f} s" in page
