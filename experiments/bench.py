r"""Benchmarks: ratios measured side by side in one run (never timed tests).

    python -m experiments.bench --suite=all --out=bench.json

Suites: ``orbit`` (fast translation-orbit path vs naive; circular ConvNet train step vs the
matmul peak, on the path ``--conv_impl`` names), ``conv`` (the ConvNet train step with XLA's
convolution against the im2col matmuls, side by side, float32 and bfloat16), ``contrastive``
(f32 / bf16 matmul peak; CLIP/SigLIP loss forward+backward vs the matmul bound, at
``--loss_batches``; compiled memory of chunked vs gathered SigLIP on 8 devices), ``train`` (each study's
main model's update step, examples/s on 1 device and on 8), ``input`` (examples/s of the grain
input path against the 1-device train steps' consumption; needs grain), ``all`` (every suite;
``input`` is skipped where grain is not installed). Writes JSON to ``--out`` (atomically) and
prints the tables. Never imports tfds; only the input part imports grain. On a CPU-only host it
ends by printing the commands that produce the GPU figures (``gpu_commands``), which
docs/benchmarks.md lists.

Each part runs in a child process with the devices it needs. On XLA:CPU the device count is fixed
when jax starts, and 8 virtual devices split the host's threads between them, which slows a
one-device program (here a 512^2 matmul ran at 68 instead of 126 GFLOP/s): so the single-device
measurements (orbit, losses, the 1-device train step) run in a 1-device process, the memory
analysis and the 8-device train step in an 8-device process. The train suite reports the 8-device
step against both the 1-device process and a 1-device mesh timed alternately in the 8-device one.
On a GPU or TPU host the flag does nothing and every part sees the real devices.
"""
import json
import os
import subprocess
import sys
import tempfile

from absl import flags
from absl import logging

from experiments import cli
from experiments import workdir as workdir_lib
from experiments.config import fail

SUITES = ("orbit", "conv", "contrastive", "train", "input", "all")
# part -> host devices it runs with (CPU only)
PARTS = {"orbit": 1, "conv": 1, "contrastive": 1, "memory": 8, "train_single": 1, "train": 8,
         "input": 1}
SUITE_PARTS = {"orbit": ("orbit",), "conv": ("conv",), "contrastive": ("contrastive", "memory"),
               "train": ("train_single", "train"), "input": ("input", "train_single")}
SUITE_PARTS["all"] = tuple(dict.fromkeys(sum(SUITE_PARTS.values(), ())))

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "orbit", SUITES, "Which benchmarks to run.")
flags.DEFINE_string("out", None, "JSON file for the results (required).")
flags.DEFINE_integer("repeats", 5, "Timed repetitions per measurement (median reported).")
flags.DEFINE_enum("conv_impl", "auto", ["auto", "native", "im2col"], "Convolution path of the "
                  "orbit suite's ConvNets (auto: encoders.conv_path, by backend).")
flags.DEFINE_list("loss_batches", ["1024", "4096", "8192"], "Batch sizes of the contrastive "
                  "loss timings (above 32768 only the tiled losses are timed).")
flags.DEFINE_enum("part", None, list(PARTS), "Internal: run one part in this process.")

# The GPU figures of docs/benchmarks.md: what a GPU host runs (printed by a CPU-only run).
GPU_COMMANDS = (
    'python3 -m pip install -r requirements.txt "jax[cuda12]==0.10.2"',
    "python3 -m experiments.bench --suite=all --out=runs/bench_gpu.json",
    "python3 -m experiments.bench --suite=conv --out=runs/bench_conv_gpu.json",
    "python3 -m experiments.bench --suite=contrastive --loss_batches=8192,65536 "
    "--out=runs/bench_loss_gpu.json",
    "python3 -m pip install torch open_clip_torch      # the side-by-side reference only",
    "python3 -m experiments.benchmarks.torch_clip_loss --batches=8192,65536 "
    "--out=runs/bench_loss_torch.json",
    "python3 -m experiments.contrastive --flagfile=experiments/configs/contrastive.flags "
    "--workdir=runs/contrastive_gpu",
    "python3 -m experiments.orbit --flagfile=experiments/configs/orbit.flags "
    "--workdir=runs/orbit_gpu --profile_steps=100:105",
)


def gpu_commands() -> str:
  return "\n".join(["GPU figures (docs/benchmarks.md): on a host with one NVIDIA GPU, run"]
                    + [f"  {c}" for c in GPU_COMMANDS])


def _has_grain() -> bool:
  import importlib.util
  return importlib.util.find_spec("grain") is not None


def _loss_batches() -> tuple[int, ...]:
  try:
    batches = tuple(int(b) for b in FLAGS.loss_batches)
  except ValueError:
    batches = ()
  if not batches or min(batches) < 1:
    fail("loss_batches", ",".join(FLAGS.loss_batches), "allowed: comma-separated integers >= 1")
  return batches


def _run_part(part: str, repeats: int) -> dict:
  from experiments.benchmarks import contrastive, orbit, train_step  # noqa: I001
  if part == "input":
    from experiments.benchmarks import input as input_bench
    return input_bench.run(repeats=repeats)
  if part == "orbit":
    return orbit.run(repeats=repeats, conv_impl=FLAGS.conv_impl)
  if part == "conv":
    from experiments.benchmarks import conv
    return conv.run(repeats=repeats)
  if part == "contrastive":
    return contrastive.run(batch_sizes=_loss_batches(), repeats=repeats,
                           n_devices_memory=0)      # memory: its own part
  if part == "memory":
    return contrastive.memory()
  return train_step.run(repeats=repeats)             # measures its process's own peak


def _child(part: str, repeats: int) -> dict:
  """``part`` in a fresh process with its device count; its JSON result."""
  env = dict(os.environ)
  xla = [f for f in env.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(xla + [f"--xla_force_host_platform_device_count={PARTS[part]}"])
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "part.json")
    logging.info("bench: %s (%d host device%s)", part, PARTS[part], "s" * (PARTS[part] > 1))
    done = subprocess.run([sys.executable, "-m", "experiments.bench", f"--part={part}",
                           f"--out={out}", f"--repeats={FLAGS.repeats}",
                           f"--conv_impl={FLAGS.conv_impl}",
                           f"--loss_batches={','.join(FLAGS.loss_batches)}"], env=env, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
      print(done.stdout[-3000:], file=sys.stderr)
      raise OSError(f"bench part {part} failed (exit code {done.returncode}; its output is above)")
    with open(out) as f:
      return json.load(f)


def _merge_train(single: dict, many: dict) -> dict:
  """The 8-device train results, with the 1-device process's examples/s and the speedup over it."""
  by_model = {r["model"]: r for r in single["rows"]}
  for row in many["rows"]:
    one = by_model[row["model"]]["per_devices"]["1"]
    row["single_process"] = {**one, "fraction_of_peak": by_model[row["model"]]["fraction_of_peak"]}
    n = str(many["devices"])
    if n in row["per_devices"] and n != "1":
      row["speedup_vs_single_process"] = one["median_s"] / row["per_devices"][n]["median_s"]
  many["single_process_peak_flop_per_s"] = single["peak_flop_per_s"]   # its MFU's ceiling
  goal = many["goal"]
  goal_row = next(r for r in many["rows"] if r["model"] == goal["model"])
  if "speedup_vs_single_process" in goal_row:
    goal["speedup_vs_single_process"] = goal_row["speedup_vs_single_process"]
    goal["met_vs_single_process"] = (goal_row["speedup_vs_single_process"]
                                     >= goal["speedup_at_least"])
  return many


def main():
  if not FLAGS.out:
    fail("out", FLAGS.out, "allowed: a file path for the JSON results")
  if FLAGS.repeats < 5:
    fail("repeats", FLAGS.repeats, "allowed: >= 5")
  if FLAGS.part:
    workdir_lib.write_json(FLAGS.out, _run_part(FLAGS.part, FLAGS.repeats))
    return
  if FLAGS.suite == "input" and not _has_grain():
    fail("suite", FLAGS.suite, "needs grain (pip install -r requirements.txt)")
  _loss_batches()
  import jax
  from experiments.benchmarks import contrastive, orbit, train_step
  wanted = [p for p in SUITE_PARTS[FLAGS.suite] if p != "input" or _has_grain()]
  parts = {p: _child(p, FLAGS.repeats) for p in wanted}
  results = {"suite": FLAGS.suite, "jax": jax.__version__, "backend": jax.default_backend(),
             "device_kind": jax.devices()[0].device_kind, "parts": {p: PARTS[p] for p in parts}}
  tables = []
  if "orbit" in parts:
    results["orbit"] = parts["orbit"]
    tables.append(orbit.format_table(results["orbit"]))
  if "conv" in parts:
    from experiments.benchmarks import conv
    results["conv"] = parts["conv"]
    tables.append(conv.format_table(results["conv"]))
  if "contrastive" in parts:
    results["contrastive"] = dict(parts["contrastive"], memory=parts["memory"])
    tables.append(contrastive.format_table(results["contrastive"]))
  if "train" in parts:
    results["train"] = _merge_train(parts["train_single"], parts["train"])
    tables.append(train_step.format_table(results["train"]))
  if "input" in parts:
    from experiments.benchmarks import input as input_bench
    results["input"] = dict(parts["input"],
                            headroom=input_bench.headroom(parts["input"], parts["train_single"]))
    tables.append(input_bench.format_table(results["input"]))
  workdir_lib.write_json(FLAGS.out, results)
  print("\n\n".join(tables))
  print(f"wrote {FLAGS.out}")
  if results["backend"] == "cpu":
    print("\n" + gpu_commands())


if __name__ == "__main__":
  cli.run_main(main)
