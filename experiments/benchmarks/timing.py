"""Shared timing helpers: median wall time of a jitted call, and the machine's matmul peak."""
from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp


def median_seconds(fn, *args, repeats: int = 7, warmup: int = 2) -> dict:
  """Median and min wall time of ``fn(*args)`` (blocked until ready) after ``warmup`` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 7) -> dict:
  """Achieved FLOP/s of one jitted n x n x n matmul: the ceiling other ratios are measured against."""
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (n, n), dtype)
  b = jax.random.normal(k2, (n, n), dtype)
  t = median_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats)
  flops = 2 * n ** 3
  return {"n": n, "dtype": jnp.dtype(dtype).name, "flops": flops, **t,
          "flop_per_s": flops / t["median_s"]}
