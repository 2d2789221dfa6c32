"""Image-tower forward speed: the lab's ViT (``invariance.pretrained``) against open_clip's torch
forward of the same weights on the same inputs, timed in alternation in one run.

Needs torch and open_clip importable beside jax (a benchmark only; neither is a dependency of the
lab):

  python -m experiments.benchmarks.towers --arch=ViT-B-32 --batch=32 --out=docs/results/bench_towers.json

Both models hold the same random weights (open_clip's init, converted by the lab's loader rules) and
their outputs are compared before timing. Prints images/s of each, their ratio, and each one's
fraction of this machine's float32 matmul peak (a 2048^3 jitted matmul timed in the same rounds;
FLOPs from XLA's cost analysis of the lab's forward).
"""
from __future__ import annotations

import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.benchmarks import timing
from invariance.pretrained import config as config_lib
from invariance.pretrained import convert
from invariance.pretrained import towers

FLAGS = flags.FLAGS
flags.DEFINE_enum("arch", "ViT-B-32", sorted(n for n, c in config_lib.KNOWN.items() if c.family == "clip"),
                  "open_clip CLIP architecture to time (open_clip builds it with random weights)")
flags.DEFINE_integer("batch", 32, "images per forward", lower_bound=1)
flags.DEFINE_integer("repeats", 7, "timed rounds (one call of each implementation per round)",
                     lower_bound=1)
flags.DEFINE_string("out", None, "write the measurements as JSON here")


def run(arch: str, batch: int, repeats: int) -> dict:
  import open_clip
  import torch
  cfg = config_lib.get_config(arch)
  reference = open_clip.create_model(arch, pretrained=None).eval()
  arrays = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
  params = convert.convert(arrays, convert.openclip_rules(cfg), convert.param_shapes(cfg))
  params = jax.tree.map(jnp.asarray, params)
  size = cfg.vision.image_size
  images_NHWC = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)
  images_NCHW = torch.from_numpy(images_NHWC.transpose(0, 3, 1, 2).copy())
  model = towers.TwoTower(cfg)
  lab = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image)["embedding"])
  x = jnp.asarray(images_NHWC)

  def torch_forward(_):
    with torch.inference_mode():
      return reference.encode_image(images_NCHW)

  ours, theirs = np.asarray(lab(params, x)), torch_forward(None).numpy()
  rel_error = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
  flops = lab.lower(params, x).compile().cost_analysis()
  flops = float((flops[0] if isinstance(flops, list) else flops)["flops"])
  # the peak is timed in the same rounds as the two forwards, so load from elsewhere hits all three
  n = 2048
  a = jax.random.normal(jax.random.key(1), (n, n))
  matmul = jax.jit(jnp.matmul)
  times = timing.median_seconds_interleaved(
      {"lab_jax": lambda _: lab(params, x), "open_clip_torch": torch_forward,
       "matmul": lambda _: matmul(a, a)}, None, repeats=repeats)
  t = times.pop("matmul")
  peak = {"n": n, **t, "flop_per_s": 2 * n ** 3 / t["median_s"]}
  rows = {}
  for name, t in times.items():
    rows[name] = {**t, "images_per_s": batch / t["median_s"],
                  "fraction_of_peak": flops / t["median_s"] / peak["flop_per_s"]}
  return {"arch": arch, "batch": batch, "max_relative_difference": rel_error, "forward_flops": flops,
          "peak": peak, "timing": rows,
          "speed_ratio_lab_over_torch": (rows["lab_jax"]["images_per_s"]
                                         / rows["open_clip_torch"]["images_per_s"]),
          "torch_threads": torch.get_num_threads(), "jax_version": jax.__version__,
          "torch_version": torch.__version__, "open_clip_version": open_clip.__version__,
          "backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count()}


def format_result(r: dict) -> str:
  lines = [f"{r['arch']} image tower, batch {r['batch']}, {r['backend']} (jax {r['jax_version']}, "
           f"torch {r['torch_version']} with {r['torch_threads']} threads); outputs agree to "
           f"{r['max_relative_difference']:.1e} relative",
           f"float32 matmul peak {r['peak']['flop_per_s'] / 1e9:.0f} GFLOP/s; forward "
           f"{r['forward_flops'] / 1e9:.1f} GFLOP"]
  for name, t in r["timing"].items():
    lines.append(f"  {name:16s} median {t['median_s'] * 1e3:8.1f} ms  {t['images_per_s']:7.1f} images/s  "
                 f"{t['fraction_of_peak']:.2f} of peak")
  lines.append(f"lab / open_clip images/s: {r['speed_ratio_lab_over_torch']:.2f}x")
  return "\n".join(lines)


def main(argv):
  del argv
  result = run(FLAGS.arch, FLAGS.batch, FLAGS.repeats)
  print(format_result(result))
  if FLAGS.out:
    with open(FLAGS.out + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(FLAGS.out + ".tmp", FLAGS.out)


if __name__ == "__main__":
  app.run(main)
