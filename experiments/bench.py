r"""Benchmarks: ratios measured side by side in one run (never timed tests).

    python -m experiments.bench --suite=orbit --out=bench_orbit.json

Suites: ``orbit`` (fast translation-orbit path vs naive; circular ConvNet train step vs the
matmul peak), ``contrastive`` (CLIP/SigLIP loss forward+backward; compiled memory of chunked vs
gathered SigLIP on 8 virtual devices), ``all``. Writes JSON to ``--out`` (atomically) and prints
a table.
"""
import os
import sys

SUITES = ("orbit", "contrastive", "all")


def _wants_devices(argv) -> bool:
  return any(a in ("--suite=contrastive", "--suite=all") for a in argv)


# The contrastive memory comparison needs 8 host devices, which XLA fixes when jax starts.
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
  from experiments.benchmarks import contrastive, orbit

  results = {"suite": FLAGS.suite, "jax": jax.__version__, "backend": jax.default_backend(),
             "devices": jax.device_count()}
  tables = []
  if FLAGS.suite in ("orbit", "all"):
    results["orbit"] = orbit.run(repeats=FLAGS.repeats)
    tables.append(orbit.format_table(results["orbit"]))
  if FLAGS.suite in ("contrastive", "all"):
    results["contrastive"] = contrastive.run(repeats=FLAGS.repeats)
    tables.append(contrastive.format_table(results["contrastive"]))
  study.write_json(FLAGS.out, results)
  print("\n\n".join(tables))
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  study.main_wrapper(main)()
