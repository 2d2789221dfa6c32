"""CLI tests of the orbit study: smoke run + schema, kill/resume gives identical results, bad flags,
the config as the default (flagfiles), typed runs."""
import dataclasses
import glob
import json
import os
import signal
import subprocess
import time

import pytest

from experiments import config
from experiments import orbit_config
from experiments.orbit_config import OrbitConfig
from invariance.models import TRANSLATION_MODELS
from tests import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "experiments/configs/orbit_smoke.flags"


def run_study(workdir, *extra, timeout=300):
  proc = cli.popen("orbit", f"--flagfile={SMOKE}", f"--workdir={workdir}", *extra)
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def load(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def without_timing(results):
  """Everything but wall-clock fields, which no rerun can reproduce."""
  strip = lambda d: {k: v for k, v in d.items() if "seconds" not in k}
  return {**results, "rows": [strip(r) for r in results["rows"]],
          "summary": [strip(s) for s in results["summary"]]}


@pytest.fixture(scope="module")
def smoke(smoke_runs):
  return smoke_runs.workdir("orbit")


def test_smoke_run_writes_results_with_schema(smoke):
  results = load(smoke)
  assert results["study"] == "orbit"
  assert {"flags", "rows", "summary", "jensen"} <= set(results)
  models = {r["model"] for r in results["rows"]}
  assert models == set(TRANSLATION_MODELS)
  for row in results["rows"]:
    for key in ("model", "seed", "acc_in_support", "acc_out_of_support", "invariance_error",
                "train_seconds"):
      assert key in row, key
    assert 0.0 <= row["acc_in_support"] <= 1.0
  by = {r["model"]: r for r in results["rows"]}
  assert by["orbit_full"]["invariance_error"] <= 1e-5       # hard/orbit invariance, even tiny
  assert by["cnn_gap"]["invariance_error"] <= 1e-5
  assert by["mlp"]["invariance_error"] > 1e-2               # ... and the control is not
  jensen = results["jensen"]
  assert set(jensen) == {"mlp", "mlp_aug_support", "mlp_aug_full", "orbit_full", "orbit_sampled",
                         "learned_aug"}
  assert all(j["violations"] == 0 and j["examples"] > 0 for j in jensen.values())
  assert by["cnn_gap"]["invariance"]["flip_rate"] == 0.0            # per-example audit
  assert by["cnn_gap"]["invariance"]["max_error_max"] <= 1e-5
  assert by["cnn_flat"]["invariance"]["flip_rate"] > 0.0            # ... and its control
  for s in results["summary"]:
    assert {"model", "acc_in_support_mean", "acc_in_support_sd"} <= set(s)
  # Every model learns something, so the golden rows pin trained behaviour (chance: 0.1; about
  # 450 test digits, so 0.2 is 10 binomial sd above it).
  learned = {m: r["acc_in_support"] for m, r in by.items()}
  assert min(learned.values()) > 0.2, learned
  for name in ("results.md", "accuracy.png", "invariance_error.png", "loss_curves.png"):
    assert os.path.getsize(os.path.join(smoke, name)) > 0


def test_rerun_of_a_finished_study_retrains_nothing_and_matches(smoke):
  before = load(smoke)
  proc = run_study(smoke)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resumed" not in proc.stderr and "step 10/" not in proc.stderr   # no training at all
  assert load(smoke) == before


def _rows_of(results, models):
  return [r for r in without_timing(results)["rows"] if r["model"] in models]


def test_sigkill_mid_training_then_resume_gives_identical_results(tmp_path, smoke):
  """Kill -9 while orbit_full trains (after its step-100 checkpoint), rerun: the same rows as the
  uninterrupted smoke run with the same flags (all but wall-clock fields; a row depends only on
  its model, seed and the flags, not on which other models run)."""
  killed_dir = str(tmp_path / "killed")
  models = "--models=orbit_full"
  proc = cli.popen("orbit", f"--flagfile={SMOKE}", f"--workdir={killed_dir}", models,
                   merge_stderr=True)
  deadline = time.time() + 240
  for line in proc.stdout:
    if "orbit_full/seed0 step 110/200" in line or time.time() > deadline:
      break
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed_dir, "results.json"))
  resumed = run_study(killed_dir, models)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "orbit_full/seed0: resumed from checkpoint at step 100" in resumed.stderr
  resumed_rows = _rows_of(load(killed_dir), {"orbit_full"})
  assert len(resumed_rows) == 1
  assert resumed_rows == _rows_of(load(smoke), {"orbit_full"})


CONFIG_BAD = ["--models=mlp,resnet", "--orbit_samples=1000", "--support=sky"]
BAD_FLAGS = [   # through the command line
    ("--models=mlp,resnet", "--models=mlp,resnet"),                # a config error
    ("--flagfile=experiments/configs/nope.flags", "nope.flags"),
    ("--steps=31", "different flags (steps)"),          # an existing workdir with other flags
]


def test_bad_flags_are_refused_naming_the_flag():
  for flag in CONFIG_BAD:
    message = cli.flag_error(OrbitConfig, f"--flagfile={SMOKE}", flag)
    assert message.startswith(flag) and "allowed" in message and "\n" not in message, message
  assert cli.flag_error(OrbitConfig, f"--flagfile={SMOKE}") == ""          # the control


def test_bad_flags_fail_fast_with_one_line_and_leave_workdir_intact(smoke):
  before = {name: open(os.path.join(smoke, name), "rb").read()
            for name in ("results.json", "results.md", "flags.json")}
  procs = [(cli.popen("orbit", f"--flagfile={SMOKE}", f"--workdir={smoke}", flag), needle)
           for flag, needle in BAD_FLAGS]                       # all at once: they fail fast
  for proc, needle in procs:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err
  for name, content in before.items():
    assert open(os.path.join(smoke, name), "rb").read() == content


def test_a_missing_tfds_dataset_is_one_line_and_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  proc = run_study(str(workdir), "--dataset=mnist", f"--data_dir={tmp_path / 'tfds'}")
  lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert "mnist" in lines[0] and str(tmp_path / "tfds") in lines[0] and "tfds build" in lines[0]
  assert not workdir.exists()


def test_end_to_end_on_a_real_tfds_name_with_mocked_data(tmp_path):
  """mnist (28x28, resized to 8x8 objects) through the whole study, in-process under
  tfds.testing.mock_data (no network)."""
  import tensorflow_datasets as tfds
  from experiments import orbit
  cfg = orbit.OrbitConfig(
      dataset="mnist", object_size=8, canvas=16, models=("mlp", "cnn_gap"), seeds=(0,),
      steps=10, eval_every=5, patience=10, batch_size=32, placements_per_image=1,
      mlp_hidden=(16,), cnn_channels=(4, 4), eval_elements=4, eval_examples=16, map_examples=4,
      jensen_batches=1, log_every=5, checkpoint_every=10, workdir=str(tmp_path / "w"),
      data_dir=str(tmp_path / "tfds"))
  cfg.validate()
  with tfds.testing.mock_data(num_examples=64):
    orbit.main(cfg)
  results = load(str(tmp_path / "w"))
  assert results["flags"]["dataset"] == "mnist"
  by = {r["model"]: r for r in results["rows"]}
  assert set(by) == {"mlp", "cnn_gap"}
  assert by["cnn_gap"]["invariance"]["max_error_max"] <= 1e-5
  assert len(by["mlp"]["placement_map"]) == 9 * 9


def _parse(*args) -> OrbitConfig:
  from absl import flags
  fv = flags.FlagValues()
  config.define_flags(OrbitConfig, fv)
  fv(["prog", *args])
  return config.from_flags(OrbitConfig, fv)


FLAGFILES = os.path.join(ROOT, "experiments", "configs")


def test_the_default_flagfile_is_the_config_default():
  """``python -m experiments.orbit --workdir=x`` runs the documented default."""
  cfg = _parse(f"--flagfile={os.path.join(FLAGFILES, 'orbit.flags')}")
  assert cfg.workdir == "workdir/orbit"
  assert dataclasses.replace(cfg, workdir=None) == OrbitConfig()
  # The control: a flagfile that changes one value does not parse to the default.
  assert dataclasses.replace(_parse("--steps=2999"), workdir=None) != OrbitConfig()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(FLAGFILES, "orbit_*.flags"))))
def test_variant_flagfiles_hold_only_what_differs_from_the_default(path):
  cfg, default = _parse(f"--flagfile={path}"), OrbitConfig()
  named = [line[2:].split("=")[0] for line in open(path) if line.startswith("--")]
  assert named and all(getattr(cfg, name) != getattr(default, name)
                       for name in named if name != "workdir"), path


def test_runs_are_typed_with_one_row_key_per_arm_and_seed():
  cfg = dataclasses.replace(OrbitConfig(), models=("mlp", "learned_aug"), seeds=(3, 4),
                            aug_width_regs=(0.05, 2.0))
  runs = cfg.runs()
  assert [r.key for r in runs] == ["mlp_seed3", "learned_aug_r0.05_seed3", "learned_aug_r2_seed3",
                                   "mlp_seed4", "learned_aug_r0.05_seed4", "learned_aug_r2_seed4"]
  assert {r.arm.spec.aug_width_reg for r in runs if r.arm.model == "learned_aug"} == {0.05, 2.0}
  assert all(r.arm.spec.cnn_channels == cfg.cnn_channels for r in runs)
  assert orbit_config.row_key("cnn_gap", 0) == "cnn_gap_seed0"


@pytest.mark.parametrize("flag", ["eval_examples", "map_examples", "jensen_batches",
                                  "cnn_channels", "mlp_hidden", "placements_per_image"])
def test_a_30_digit_count_is_refused_in_one_line_naming_the_flag(flag):
  """Every size is bounded in the config (counts live in int32 indices and step counters); the
  smoke flagfile alone is the control."""
  smoke = f"--flagfile={os.path.join(ROOT, SMOKE)}"
  message = cli.flag_error(OrbitConfig, smoke, f"--{flag}={'1' * 30}")
  assert message.startswith(f"--{flag}=") and "allowed" in message and "\n" not in message
  assert cli.flag_error(OrbitConfig, smoke) == ""


def test_model_steps_names_any_known_model_and_refuses_others():
  """The smoke flagfile's overrides name models a single-model rerun leaves out (ignored there)."""
  smoke = f"--flagfile={os.path.join(ROOT, SMOKE)}"
  assert cli.flag_error(OrbitConfig, smoke, "--models=orbit_full") == ""
  assert _parse(smoke, "--models=orbit_full").steps_of("orbit_full") == 200
  assert _parse(smoke).steps_of("cnn_gap") == 400
  message = cli.flag_error(OrbitConfig, smoke, "--model_steps=resnet:10")
  assert message.startswith("--model_steps=resnet:10:") and "allowed" in message
