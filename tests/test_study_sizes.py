"""Sizes and rates the orbit and recovery studies cannot run are refused by the config, before any
work: one line naming the flag and what is allowed (a 30-digit --cnn_channels, --steps, --num_train
or --recaption_learning_rate; step counts past int32; memory estimates past this machine's)."""
import os

import pytest

from experiments import orbit_config
from experiments import recover_config
from experiments.orbit_config import OrbitConfig
from experiments.recover_config import RecoverConfig
from tests import cli

HUGE = "1" * 30
ORBIT = f"--flagfile={os.path.join(cli.ROOT, 'experiments/configs/orbit_smoke.flags')}"
RECOVER = f"--flagfile={os.path.join(cli.ROOT, 'experiments/configs/recover_smoke.flags')}"

ORBIT_FLAGS = ["steps", "warmup_steps", "eval_every", "patience", "batch_size", "canvas",
               "object_size", "placements_per_image", "mlp_hidden", "cnn_channels",
               "aug_eval_samples", "orbit_samples", "eval_elements", "learning_rate", "min_delta",
               "data_seed"]
RECOVER_FLAGS = ["num_train", "n_labels", "num_test", "contrastive_batch_size",
                 "tune_batch_size", "embed_dim", "pretrain_steps", "pretrain_warmup_steps",
                 "recaption_steps", "recaption_warmup_steps", "tune_steps",
                 "eval_every", "patience", "min_delta", "pretrain_learning_rate",
                 "recaption_learning_rate", "learning_rates"]


def _refused(cls, flagfile, flag, value):
  message = cli.flag_error(cls, flagfile, f"--{flag}={value}")
  assert message.startswith(f"--{flag}="), message          # names the flag it is about
  assert "allowed" in message and "\n" not in message
  return message


@pytest.mark.parametrize("flag", ORBIT_FLAGS)
def test_orbit_refuses_a_30_digit_value_naming_the_flag(flag):
  _refused(OrbitConfig, ORBIT, flag, HUGE)


@pytest.mark.parametrize("flag", RECOVER_FLAGS)
def test_recover_refuses_a_30_digit_value_naming_the_flag(flag):
  _refused(RecoverConfig, RECOVER, flag, HUGE)


def test_the_smoke_flagfiles_are_the_controls():
  assert cli.flag_error(OrbitConfig, ORBIT) == ""
  assert cli.flag_error(RecoverConfig, RECOVER) == ""
  # The documented default runs too (their flagfiles are checked in tests/test_config.py).
  assert cli.flag_error(OrbitConfig, "--workdir=x") == ""
  assert cli.flag_error(RecoverConfig, "--workdir=x") == ""


@pytest.mark.parametrize("cls, flagfile, flag", [
    (OrbitConfig, ORBIT, "steps"), (OrbitConfig, ORBIT, "eval_every"),
    (RecoverConfig, RECOVER, "tune_steps"), (RecoverConfig, RECOVER, "patience")])
def test_step_counts_end_at_int32(cls, flagfile, flag):
  top = orbit_config.STEPS_MAX
  assert top == recover_config.STEPS_MAX == 2**31 - 1
  message = _refused(cls, flagfile, flag, top + 1)
  assert message.endswith(f"<= {top}")
  assert f"--{flag}=" not in cli.flag_error(cls, flagfile, f"--{flag}={top}")


def test_model_steps_and_rates_at_their_bounds():
  over = f"mlp:{orbit_config.STEPS_MAX + 1}"
  assert _refused(OrbitConfig, ORBIT, "model_steps", over).startswith(f"--model_steps={over}:")
  for cls, flagfile, flag in [(OrbitConfig, ORBIT, "learning_rate"),
                              (RecoverConfig, RECOVER, "recaption_learning_rate"),
                              (RecoverConfig, RECOVER, "pretrain_learning_rate")]:
    assert _refused(cls, flagfile, flag, "1.5").endswith("<= 1.0")
    assert cli.flag_error(cls, flagfile, f"--{flag}=1") == ""
  assert _refused(RecoverConfig, RECOVER, "learning_rates", "1e-3,2")


def _orbit(**changes):
  import dataclasses
  return dataclasses.replace(OrbitConfig(workdir="x"), **changes)


def test_orbit_memory_estimates_grow_with_the_flag_they_name():
  """The same check with a small memory limit: the default fits, a wider net does not, and the
  line names the flag that grew (estimates are lower bounds, so a default is never refused)."""
  limit = 64 * 2**20
  _orbit().check_sizes(limit_bytes=limit)
  cases = {"cnn_channels": (256, 256, 256, 256), "mlp_hidden": (4096, 4096),
           "batch_size": 100_000, "placements_per_image": 10**6, "aug_eval_samples": 10**5,
           "canvas": 128}
  for flag, value in cases.items():
    with pytest.raises(ValueError, match=f"^--{flag}=.*needs an estimated .* GiB"):
      _orbit(**{flag: value}).check_sizes(limit_bytes=limit)


def test_recover_memory_estimates_name_the_scene_count():
  import dataclasses
  cfg = RecoverConfig(workdir="x")
  cfg.check_sizes()
  limit = 2 * recover_config.SCENE_BYTES * cfg.num_train
  cfg.check_sizes(limit_bytes=limit)
  with pytest.raises(ValueError, match="^--num_test=.*needs an estimated"):
    dataclasses.replace(cfg, num_test=3 * cfg.num_train).check_sizes(limit_bytes=limit)
  with pytest.raises(ValueError, match="^--n_labels=.*needs an estimated"):
    dataclasses.replace(cfg, n_labels=(8, 3 * cfg.num_train)).check_sizes(limit_bytes=limit)


def test_the_cli_stops_before_any_work(tmp_path):
  """As a user runs it: exit 2, one line naming the flag, no workdir, no flags.json. Every study
  reaches its config through the same experiments/cli.run, so one study's command line stands for
  the rest (their refusals are checked in-process above)."""
  workdir = tmp_path / "run"
  proc = cli.popen("orbit", ORBIT, f"--workdir={workdir}", f"--cnn_channels={HUGE}")
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 2, err
  lines = [line for line in err.strip().splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: --cnn_channels="), err
  assert "allowed" in lines[0]
  assert not workdir.exists()
