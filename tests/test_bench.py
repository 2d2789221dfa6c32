"""The benchmark script's plumbing (its measurements are run by hand, never timed in tests)."""
import copy

from experiments import bench
from experiments.benchmarks import train_step
from tests import cli


def _train_result(devices, seconds):
  rows = [{"model": m, "batch": 128, "flops": 1e6, "fraction_of_peak": {"float32": 0.1},
           "per_devices": {str(n): {"median_s": t, "examples_per_s": 128 / t}
                           for n, t in seconds[m].items()}}
          for m in seconds]
  for r in rows:
    if str(devices) in r["per_devices"] and devices > 1:
      r["speedup"] = r["per_devices"]["1"]["median_s"] / r["per_devices"][str(devices)]["median_s"]
  return {"backend": "cpu", "device_kind": "cpu", "devices": devices, "rows": rows,
          "peak_flop_per_s": {"float32": 1e11}, "goal": train_step.goal_of(rows, devices)}


def test_merge_train_compares_the_eight_device_step_with_the_one_device_process():
  single = _train_result(1, {train_step.GOAL_MODEL: {"1": 2.0}})
  many = _train_result(8, {train_step.GOAL_MODEL: {"1": 3.0, "8": 1.0}})
  merged = bench._merge_train(single, copy.deepcopy(many))
  row = merged["rows"][0]
  assert row["speedup"] == 3.0 and row["speedup_vs_single_process"] == 2.0
  assert merged["single_process_peak_flop_per_s"] == {"float32": 1e11}
  assert merged["goal"]["met"] and merged["goal"]["met_vs_single_process"]
  table = train_step.format_table(merged)
  assert "3.00x the 1-device mesh of the same process (met)" in table
  assert "2.00x a 1-device process (met)" in table
  # Control: a slower 8-device step fails the same goal in both comparisons.
  slow = bench._merge_train(single, _train_result(8, {train_step.GOAL_MODEL: {"1": 3.0, "8": 2.5}}))
  assert not slow["goal"]["met"] and not slow["goal"]["met_vs_single_process"]
  assert "NOT met" in train_step.format_table(slow)


def test_bad_flags_fail_in_one_line(tmp_path):
  out = f"--out={tmp_path / 'bench.json'}"
  procs = {flag: cli.popen("bench", *args) for flag, args in {
      "out": ["--suite=orbit"], "suite": ["--suite=everything", out],
      "repeats": ["--suite=orbit", out, "--repeats=2"],
      "loss_batches": ["--suite=contrastive", out, "--loss_batches=8192,lots"],
      "conv_impl": ["--suite=conv", out, "--conv_impl=fft"]}.items()}
  for flag, proc in procs.items():
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and flag in lines[0], (flag, err)
  assert not list(tmp_path.iterdir())


def test_train_suite_times_the_orbit_study_default_models():
  """The benchmark's orbit models are the default run's: cnn_gap with 4 circular 3x3 layers of 16
  channels (9 * (1 * 16 + 3 * 16 * 16) weights + 4 * 16 biases + a 16 -> 10 head = 7,290; a
  3-layer net would have 4,970) and orbit_full's MLP 576-64-64-10 (41,738), at batch 64 on 24x24."""
  import jax
  for name, count in (("cnn_gap", 7290), ("orbit_full", 41738)):
    loss_fn, params, batch = train_step._orbit_model(name)
    assert sum(x.size for x in jax.tree.leaves(params)) == count, name
    assert batch["images"].shape == (64, 24, 24, 1)
    loss = jax.eval_shape(loss_fn, params, batch, jax.random.key(0))[0]   # traced, not computed
    assert loss.shape == () and loss.dtype == jax.numpy.float32, name
