"""Convolution paths side by side: the ConvNet train step with XLA's convolution (``native``: an
explicit wrap, then a VALID conv; cuDNN on GPU) against the chunked im2col matmuls (``im2col``, the
CPU path), in one process, timed in alternation so other load hits both alike.

The orbit suite's ConvNet (24 x 24 x 1, three 3 x 3 layers of 32 channels, batch 128, forward +
backward + Adam), circular (the invariant net) and zero padding, in float32 and with bfloat16
computation. Each row: both medians, ``native_speedup`` = im2col time / native time (> 1: native
is faster), their achieved convolution FLOP/s, and ``max_rel_grad_diff``: the two paths' loss
gradients at the same parameters, largest |difference| per leaf over that leaf's largest |value|
(the same function up to rounding); and which path ``encoders.conv_path()`` picks here. That
pick is what these ratios test: im2col on CPU, native on GPU and TPU.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.benchmarks import orbit as orbit_bench
from experiments.benchmarks import timing
from invariance import encoders

CHANNELS = (32, 32, 32)
IMPLS = ("native", "im2col")


def _row(circular: bool, dtype, repeats: int, batch: int) -> dict:
  steps, grads, args = {}, {}, None
  for impl in IMPLS:
    net = encoders.ConvNet(CHANNELS, circular=circular, global_pool=circular, conv_impl=impl,
                           dtype=dtype)
    steps[impl], args_impl, grad_fn = orbit_bench.cnn_train_step(net, batch)
    args = args or args_impl                       # same initial params for both (same key)
    grads[impl] = jax.tree.leaves(grad_fn(args[0]))
  t = timing.median_seconds_interleaved(steps, *args, repeats=repeats)
  diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
             for a, b in zip(grads["native"], grads["im2col"]))
  flops = orbit_bench._conv_flops(batch, 24, CHANNELS)             # pylint: disable=protected-access
  return {"padding": "circular" if circular else "zero",
          "dtype": jnp.dtype(dtype or jnp.float32).name, "batch": batch, "flops": flops,
          **{impl: {**t[impl], "flop_per_s": flops / t[impl]["median_s"]} for impl in IMPLS},
          "native_speedup": t["im2col"]["median_s"] / t["native"]["median_s"],
          "max_rel_grad_diff": diff}


def run(repeats: int = 5, batch: int = 128) -> dict:
  rows = [_row(circular, dtype, repeats, batch)
          for dtype in (None, jnp.bfloat16) for circular in (True, False)]
  return {"suite": "conv", "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind, "auto_path": encoders.conv_path(),
          "rows": rows}


def format_table(r: dict) -> str:
  lines = [f"convolution paths on {r['device_kind']} ({r['backend']}; encoders.conv_path() picks "
           f"{r['auto_path']} here): ConvNet train step, batch {r['rows'][0]['batch']}",
           "| padding | dtype | native | im2col | native speedup | grad diff |",
           "|---|---|---|---|---|---|"]
  for row in r["rows"]:
    ms = lambda impl: f"{1e3 * row[impl]['median_s']:.2f} ms"
    lines.append(f"| {row['padding']} | {row['dtype']} | {ms('native')} | {ms('im2col')} | "
                 f"{row['native_speedup']:.2f}x | {row['max_rel_grad_diff']:.1e} |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(format_table(run()))
