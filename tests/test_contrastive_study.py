"""The contrastive study's CLI: the smoke flagfile end to end, typed runs named once, the default
flagfile is the config's default, and bad flags (sizes that cannot fit or run too) fail before
any work."""
import dataclasses
import json
import os
import pathlib

from tests import cli

SMOKE = "experiments/configs/contrastive_smoke.flags"
ATTRS = {"car_color", "light", "pedestrian", "clouds"}
LAYERS = {"block1_grid", "block1_pool", "block2_grid", "block2_pool", "block3_grid", "block3_pool",
          "penultimate", "embedding"}
HUGE = "1" * 30
RUNS = ["clip_p0_d4", "clip_p0_d4_swap", "clip_p1_d4", "clip_p1_d4_swap"]


def _cli(*args):
  return cli.popen("contrastive", *args)


def _check_layers(report):
  for field in ("probe", "sensitivity"):
    assert set(report[field]) == LAYERS, field
    for layer, by_attr in report[field].items():
      assert set(by_attr) == ATTRS, (field, layer)
      assert all(0.0 <= v <= 1.0 + 1e-6 for v in by_attr.values()) or field == "sensitivity"


def test_smoke_flagfile_end_to_end(smoke_runs):
  workdir, returncode, output = smoke_runs.get("contrastive")
  assert returncode == 0 and not output.count("Traceback"), output[-3000:]
  workdir = pathlib.Path(workdir)
  results = json.loads((workdir / "results.json").read_text())
  assert results["study"] == "contrastive"
  assert results["flags"]["losses"] == ["clip"]
  rows = results["rows"]
  assert {(r["loss"], r["mention_prob"], r["policy"]) for r in rows} == {
      ("clip", p, policy) for p in (0.0, 1.0) for policy in ("mention", "swap")}
  for r in rows:
    assert r["embed_dim"] == 4 and r["seed"] == 0 and r["train_seconds"] > 0
    _check_layers(r)
    assert set(r["zero_shot"]) == {"car_color", "light"}
    # p = 0 / 1 mentions of the varied attribute (the light, or the car under swap): none / all;
    # exposures: the mentioning captions in 12 batches of 32.
    assert r["varied"] == ("car_color" if r["policy"] == "swap" else "light")
    assert r["mentions"] == (0 if r["mention_prob"] == 0 else 256)
    assert r["exposures"] == (0 if r["mention_prob"] == 0 else 12 * 32)
    traced = r["mention_prob"] == 0
    assert sorted(r["trace"], key=int) == (["0", "6", "12"] if traced else [])
    for step in r["trace"].values():
      _check_layers(step)
    if traced:                                    # the end of the trace is the final row's probe
      assert r["trace"]["12"]["probe"] == r["probe"]
  assert [p["seed"] for p in results["pixel_rows"]] == [0]
  assert set(results["pixel_rows"][0]["probe"]) == ATTRS
  init = results["init_rows"][0]
  _check_layers(init)
  assert all(r["trace"]["0"]["probe"] == init["probe"] for r in rows if r["trace"])
  assert len(results["summary"]) == 4 and "probe/embedding/light_mean" in results["summary"][0]
  md = (workdir / "results.md").read_text()
  assert "light per layer, trained vs init" in md and "Light probe through training" in md
  for png in ("layers_vs_init", "light_over_training", "dose_response", "probe_vs_p",
              "loss_curves"):
    assert (workdir / f"{png}.png").stat().st_size > 0, png
  assert sorted(os.listdir(workdir / "checkpoints")) == RUNS
  assert os.listdir(workdir / "checkpoints" / "clip_p0_d4") == ["0"]


def test_grid_names_every_run_once():
  from experiments import contrastive_runs
  from experiments.contrastive_config import ContrastiveConfig
  cfg = ContrastiveConfig(losses=("clip",), mention_probs=(0.0, 0.01, 1.0), steps=(100, 400),
                          policies=("mention", "swap"), lamp_sizes=(2, 4),
                          duplicate_captions=("negative", "positive"), trace_probs=(0.0,),
                          seeds=(0, 1), workdir="w")
  runs = contrastive_runs.grid(cfg)
  keys = [r.key for r in runs]
  assert len(runs) == 2 * 3 * 2 * 2 * 2 * 2 == len(set(keys))
  assert "clip_p0_d8_seed0" in keys and "clip_p0.01_d8_swap_lamp4_multipos_t100_seed1" in keys
  assert [r.key for r in runs if r.traced] == [
      k for k in keys if k.startswith("clip_p0_") and "_t100" not in k]
  # The other rows' keys, derived in the same module (the workdir rows of earlier runs keep them).
  first = runs[0]
  assert (first.init_key, contrastive_runs.pixels_key(2, 0)) == ("init_d8_lamp2_seed0",
                                                                 "pixels_lamp2_seed0")
  assert first.trace_key(50) == "clip_p0_d8_t100_seed0_step50"


def test_the_default_flagfile_is_the_configs_default():
  """``contrastive.flags`` holds only its header and --workdir: it parses to the dataclass default
  (workdir aside); the control: a variant flagfile does not."""
  from absl import flags
  from experiments import config
  from experiments.contrastive_config import ContrastiveConfig

  def parse(flagfile):
    fv = flags.FlagValues()
    config.define_flags(ContrastiveConfig, fv)
    fv(["prog", f"--flagfile={flagfile}"])
    return dataclasses.replace(config.from_flags(ContrastiveConfig, fv), workdir=None)

  default = ContrastiveConfig()
  assert parse("experiments/configs/contrastive.flags") == default
  assert parse("experiments/configs/contrastive_dose.flags") != default
  flags_lines = [line for line in open("experiments/configs/contrastive.flags")
                 if line.startswith("--")]
  assert flags_lines == ["--workdir=workdir/contrastive\n"]


BAD = [  # (flag named in the error, arguments, text the error states)
    ("losses", ["--losses=clip,triplet"], "triplet"),
    ("mention_probs", ["--mention_probs=0,1.5"], "<= 1"),
    ("embed_dims", ["--embed_dims=0"], ">= 1"),
    ("attribute", ["--attribute=weather"], "weather"),
    ("policies", ["--policies=mention,verbose"], "verbose"),
    ("lamp_sizes", ["--lamp_sizes=2,7"], "7"),
    ("duplicate_captions", ["--duplicate_captions=ignored"], "ignored"),
    ("probe_steps", ["--probe_steps=0,50"], "<= the longest --steps=12"),
    ("trace_probs", ["--trace_probs=0.5"], "--mention_probs"),
    ("warmup_steps", ["--steps=2,12"], "shortest --steps=2"),
    ("duplicate_captions", ["--duplicate_captions=positive", "--tiled_threshold=16"],
     "tiled_threshold"),
    ("embed_dims", ["--embed_dims=100000000"], "GiB"),
    ("steps", [f"--steps={HUGE}"], "allowed"),
    ("num_pairs", [f"--num_pairs={HUGE}"], "GiB"),
    ("num_train", [f"--num_train={HUGE}"], "GiB"),
    # Sizes that cannot fit: refused up front with the estimate, not a traceback minutes later.
    ("embed_dims", ["--embed_dims=999999999999999999999999999999"], "GiB"),
    ("embed_dims", ["--embed_dims=100000000"], "GiB"),
    # 30-digit sizes and rates: every one named, none reaching numpy or the training loop.
    *[(flag, [f"--{flag}={HUGE}"], "allowed") for flag in (
        "steps", "probe_steps", "warmup_steps", "num_train", "num_probe", "num_pairs",
        "batch_size", "learning_rate", "seeds", "log_every", "checkpoint_every")],
]
CLI_BAD = [  # through the command line: exit code, one line on stderr, the workdir untouched
    ("flagfile", ["--flagfile=experiments/configs/no_such.flags"], "no_such"),
    ("losses", ["--losses=clip,triplet"], "triplet"),
    ("num_train", [f"--num_train={HUGE}"], "GiB"),      # a new workdir: never created
]


def test_bad_flags_are_refused_naming_the_flag():
  from experiments.contrastive_config import ContrastiveConfig
  for flag, args, text in BAD:
    message = cli.flag_error(ContrastiveConfig, f"--flagfile={SMOKE}", *args)
    assert flag in message and text in message and "\n" not in message, (flag, message)
  assert cli.flag_error(ContrastiveConfig, f"--flagfile={SMOKE}") == ""      # the control


def test_bad_flags_fail_in_one_line_and_leave_the_workdir_alone(tmp_path):
  """Through the command line: exit code 2, one line naming the flag, an earlier workdir
  untouched and a new one never created (no flags.json left behind)."""
  workdir = tmp_path / "earlier"
  workdir.mkdir()
  (workdir / "results.json").write_text('{"study": "contrastive", "rows": ["earlier"]}')
  before = sorted(os.listdir(workdir))
  new = {flag: tmp_path / f"new_{flag}" for flag, args, _ in CLI_BAD if HUGE in args[0]}
  procs = [(flag, text, _cli(f"--flagfile={SMOKE}", f"--workdir={new.get(flag, workdir)}", *args))
           for flag, args, text in CLI_BAD]
  for flag, text, proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (flag, proc.returncode)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (flag, err)
    assert lines[0].startswith("error:") and flag in lines[0] and text in lines[0], (flag, lines[0])
  assert not any(path.exists() for path in new.values()), "a refused run created its workdir"
  assert sorted(os.listdir(workdir)) == before
  assert json.loads((workdir / "results.json").read_text())["rows"] == ["earlier"]
