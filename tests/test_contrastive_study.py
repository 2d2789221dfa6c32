"""The contrastive study's CLI: the smoke flagfile end to end, and bad flags (sizes that cannot
fit too) fail before any work."""
import json
import os
import pathlib

from tests import cli

SMOKE = "experiments/configs/contrastive_smoke.flags"
ATTRS = {"car_color", "light", "pedestrian", "clouds"}
LAYERS = {"block1_grid", "block1_pool", "block2_grid", "block2_pool", "block3_grid", "block3_pool",
          "penultimate", "embedding"}
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
  from experiments.contrastive import run_name
  from experiments.contrastive_config import ContrastiveConfig
  cfg = ContrastiveConfig(losses=("clip",), mention_probs=(0.0, 0.01, 1.0), steps=(100, 400),
                          policies=("mention", "swap"), lamp_sizes=(2, 4),
                          duplicate_captions=("negative", "positive"), trace_probs=(0.0,),
                          workdir="w")
  runs = cfg.runs()
  names = [run_name(cfg, r) for r in runs]
  assert len(runs) == 3 * 2 * 2 * 2 * 2 == len(set(names))
  assert "clip_p0_d8" in names and "clip_p0.01_d8_swap_lamp4_multipos_t100" in names
  assert [run_name(cfg, r) for r in runs if r["traced"]] == [
      n for n in names if n.startswith("clip_p0_") and "_t100" not in n]


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
    # Sizes that cannot fit: refused up front with the estimate, not a traceback minutes later.
    ("embed_dims", ["--embed_dims=999999999999999999999999999999"], "GiB"),
    ("embed_dims", ["--embed_dims=100000000"], "GiB"),
]
CLI_BAD = [  # through the command line: exit code, one line on stderr, the workdir untouched
    ("flagfile", ["--flagfile=experiments/configs/no_such.flags"], "no_such"),
    ("losses", ["--losses=clip,triplet"], "triplet"),
    ("embed_dims", ["--embed_dims=100000000"], "GiB"),
]


def test_bad_flags_are_refused_naming_the_flag():
  from experiments.contrastive_config import ContrastiveConfig
  for flag, args, text in BAD:
    message = cli.flag_error(ContrastiveConfig, f"--flagfile={SMOKE}", *args)
    assert flag in message and text in message and "\n" not in message, (flag, message)
  assert cli.flag_error(ContrastiveConfig, f"--flagfile={SMOKE}") == ""      # the control


def test_bad_flags_fail_in_one_line_and_leave_the_workdir_alone(tmp_path):
  workdir = tmp_path / "earlier"
  workdir.mkdir()
  (workdir / "results.json").write_text('{"study": "contrastive", "rows": ["earlier"]}')
  before = sorted(os.listdir(workdir))
  procs = [(flag, text, _cli(f"--flagfile={SMOKE}", f"--workdir={workdir}", *args))
           for flag, args, text in CLI_BAD]
  for flag, text, proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, flag
    lines = err.strip().splitlines()
    assert len(lines) == 1, (flag, err)
    assert lines[0].startswith("error:") and flag in lines[0] and text in lines[0], (flag, lines[0])
  assert sorted(os.listdir(workdir)) == before
  assert json.loads((workdir / "results.json").read_text())["rows"] == ["earlier"]
