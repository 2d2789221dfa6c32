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


def median_seconds_interleaved(fns: dict, *args, repeats: int = 7, warmup: int = 2) -> dict:
  """``median_seconds`` for several functions of the same arguments, timed in alternation (one call
  of each per round), so that load from other processes on a shared machine hits all alike."""
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  return {name: {"median_s": statistics.median(t), "min_s": min(t), "repeats": repeats}
          for name, t in times.items()}


def matmul_peak(sizes=(1024, 2048), dtype=jnp.float32, repeats: int = 7) -> dict:
  """Achieved FLOP/s of jitted n x n x n matmuls (median time per size; the best size is kept):
  the ceiling other ratios are measured against."""
  best = None
  for n in ((sizes,) if isinstance(sizes, int) else sizes):
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    t = median_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats)
    flops = 2 * n ** 3
    r = {"n": n, "dtype": jnp.dtype(dtype).name, "flops": flops, **t,
         "flop_per_s": flops / t["median_s"]}
    if best is None or r["flop_per_s"] > best["flop_per_s"]:
      best = r
  return best
