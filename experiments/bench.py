r"""Benchmarks: ratios measured side by side in one run (never timed tests).

    python -m experiments.bench --suite=orbit --out=bench_orbit.json

Suites: ``orbit`` (fast translation-orbit path vs naive; circular ConvNet train step vs the
matmul peak), ``contrastive`` (f32 / bf16 matmul peak; CLIP/SigLIP loss forward+backward vs the
matmul bound; compiled memory of chunked vs gathered SigLIP on 8 virtual devices), ``train`` (each
study's main model's update step, examples/s on 1 device and on all devices), ``all``. Writes JSON
to ``--out`` (atomically) and prints a table. On a CPU host, ``contrastive``, ``train`` and ``all``
run on 8 virtual devices. Imports neither tfds nor grain.
"""
import os
import sys

SUITES = ("orbit", "contrastive", "train", "all")


def _wants_devices(argv) -> bool:
  return any(a in ("--suite=contrastive", "--suite=train", "--suite=all") for a in argv)


# The memory comparison and the 1-vs-8 train step need 8 host devices, fixed when jax starts (the
# flag only affects the CPU backend: a GPU or TPU run uses its real devices).
if __name__ == "__main__" and _wants_devices(sys.argv):
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()

from absl import flags  # noqa: E402

from experiments import study  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "orbit", SUITES, "Which benchmarks to run.")
flags.DEFINE_string("out", None, "JSON file for the results (required).")
flags.DEFINE_integer("repeats", 5, "Timed repetitions per measurement (median reported).")


def main():
  if not FLAGS.out:
    study.fail("out", FLAGS.out, "allowed: a file path for the JSON results")
  import jax
  from experiments.benchmarks import contrastive, orbit, train_step

  results = {"suite": FLAGS.suite, "jax": jax.__version__, "backend": jax.default_backend(),
             "devices": jax.device_count()}
  tables = []
  if FLAGS.suite in ("orbit", "all"):
    results["orbit"] = orbit.run(repeats=FLAGS.repeats)
    tables.append(orbit.format_table(results["orbit"]))
  if FLAGS.suite in ("contrastive", "all"):
    results["contrastive"] = contrastive.run(repeats=FLAGS.repeats)
    tables.append(contrastive.format_table(results["contrastive"]))
  if FLAGS.suite in ("train", "all"):
    results["train"] = train_step.run(repeats=FLAGS.repeats)
    tables.append(train_step.format_table(results["train"]))
  study.write_json(FLAGS.out, results)
  print("\n\n".join(tables))
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  study.main_wrapper(main)()
