"""Multi-host: the contrastive study on 2 processes (jax.distributed on 127.0.0.1, gloo CPU
collectives, one device each) against the single-process smoke run; a dead peer stops the rest.

Both two-process runs start with the smoke runs (tests/cli.SmokeRuns) so that their compiles and
the heartbeat wait overlap with the other studies' work.
"""
import json
import os
import re

from tests import cli

ROW = "rows/clip_p0_d4_seed0.json"


def _logged_losses(output: str) -> dict:
  return {int(step): float(loss) for step, loss in
          re.findall(r"clip_p0_d4/seed0 step (\d+)/\d+ loss=([0-9.]+)", output)}


def test_two_processes_match_one_with_the_same_global_batch(smoke_runs):
  single = smoke_runs.workdir("contrastive")
  _, _, single_output = smoke_runs.get("contrastive")
  outputs = []
  for i in range(2):
    workdir, returncode, output = smoke_runs.get(f"distributed/{i}")
    assert returncode == 0, output[-3000:]
    assert f"distributed: process {i} of 2, 1 local / 2 global devices" in output
    outputs.append(output)
  with open(os.path.join(single, ROW)) as f:
    one = json.load(f)
  with open(os.path.join(workdir, ROW)) as f:
    two = json.load(f)
  # Same global batch per step, so the same training up to float summation order.
  assert abs(one["final_loss"] - two["final_loss"]) <= 1e-5 * abs(one["final_loss"]), (one, two)
  logged = _logged_losses(single_output)           # printed with 4 decimals
  assert sorted(logged) == [6, 12]
  for output in outputs:
    assert _logged_losses(output).keys() == logged.keys()
    for step, loss in _logged_losses(output).items():
      assert abs(loss - logged[step]) <= 1e-4, (step, loss, logged[step])
  assert one["mentions"] == two["mentions"] == 0
  # Process 0 published the results; checkpoints were written collectively.
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert [r["loss"] for r in results["rows"]] == ["clip"]
  assert os.listdir(os.path.join(workdir, "checkpoints", "clip_p0_d4", "0"))


def test_a_dead_peer_stops_the_survivor_within_the_heartbeat_timeout(smoke_runs):
  _, returncode, output = smoke_runs.get("peer_death/0")
  killed_at = smoke_runs.peer_death.get("killed_at")
  assert killed_at is not None, "process 1 never joined:\n" + output[-3000:]
  assert returncode != 0, output[-3000:]
  assert "another task died" in output, output[-3000:]
  waited = smoke_runs.exited_at["peer_death/0"] - killed_at
  # The peer is declared dead after PEER_DEATH_HEARTBEAT s; slack for a loaded 2-core machine.
  assert waited <= cli.PEER_DEATH_HEARTBEAT + 30, waited
  assert "distributed: process 0 of 2" in output and f"step {cli.PEER_DEATH_STEPS}/" not in output


BAD = {
    "num_processes": ["--num_processes=2"],                               # without --distributed
    "distributed": ["--distributed", "--num_processes=2"],                # the others missing
    "coordinator_address": ["--distributed", "--coordinator_address=host0", "--num_processes=2",
                            "--process_id=0"],                            # no port
    "process_id": ["--distributed", "--coordinator_address=127.0.0.1:1", "--num_processes=2",
                   "--process_id=2"],
}


def test_bad_distributed_flags_fail_in_one_line_before_any_work(tmp_path):
  procs = {flag: cli.popen("contrastive", f"--flagfile={cli.SMOKE_FLAGFILES['contrastive']}",
                           f"--workdir={tmp_path / flag}", *args) for flag, args in BAD.items()}
  for flag, proc in procs.items():
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (flag, err)
    assert lines[0].startswith(f"error: --{flag}="), (flag, lines[0])
  assert not list(tmp_path.iterdir())
