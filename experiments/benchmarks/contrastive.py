"""Contrastive losses: forward+backward time, and compiled memory of chunked vs gathered SigLIP.

(0) Peak: the machine's jitted n x n x n matmul FLOP/s in float32 and in bfloat16
    (``timing.matmul_peak``); the float32 one is the ceiling the losses are measured against.
(a) Time: median wall time of ``jit(value_and_grad(loss))`` w.r.t. both embeddings and the
    temperature (and bias), single device, for CLIP (autodiff ``clip_loss``, and ``clip_fused``:
    ``clip_loss_fused``'s hand-written backward, timed in alternation with it) and SigLIP at each
    batch size. FLOPs count the three B x B x D products of forward + backward, 6 B^2 D; each row
    gives the achieved FLOP/s, its fraction of the float32 peak, and ``bound_ratio`` = median time
    / (6 B^2 D / peak), the time relative to the matmul bound. Goal: the best CLIP variant within
    1.25x of the bound at B = 8192 (D = 256).
(b) Memory: ``siglip_loss`` (each device gathers all texts: (B/D) x B logits) against
    ``siglip_loss_chunked`` (ring: (B/D) x (B/D) logits) under ``shard_map`` on D devices, forward
    + backward, from XLA's memory analysis of the compiled program (per device; nothing runs, so
    B can be large). Goal: chunked <= 1/8 of gathered at B = 32768 on 8 devices.

``python -m experiments.benchmarks.contrastive`` prints the table; it forces 8 host devices
(``XLA_FLAGS``) when run as a script. A caller that imports ``run`` must set that flag itself,
before jax is imported, or the memory part is skipped (and says so).
"""
import os

if __name__ == "__main__":
  _FLAG = "--xla_force_host_platform_device_count=8"
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.benchmarks import timing
from invariance import contrastive, parallel

MEMORY_GOAL = 1 / 8
CLIP_BOUND_GOAL = 1.25   # best CLIP variant's time / matmul bound, at CLIP_GOAL_BATCH
CLIP_GOAL_BATCH = 8192
LOSSES = {"clip": contrastive.clip_loss, "clip_fused": contrastive.clip_loss_fused,
          "siglip": contrastive.siglip_loss}


def _params(loss: str):
  if loss.startswith("clip"):
    return (contrastive.init_clip_temperature(),)
  return contrastive.init_siglip_params()


def _row(loss: str, batch: int, dim: int, t: Dict[str, Any], peak_flop_per_s: float,
         **extra) -> Dict[str, Any]:
  flops = 6 * batch * batch * dim
  bound_s = flops / peak_flop_per_s
  return dict(loss=loss, batch=batch, dim=dim, flops=flops, flop_per_s=flops / t["median_s"],
              fraction_of_peak=bound_s / t["median_s"], bound_s=bound_s,
              bound_ratio=t["median_s"] / bound_s, **t, **extra)


def _time_losses(losses: Sequence[str], batch: int, dim: int, repeats: int, key,
                 peak_flop_per_s: float) -> List[Dict[str, Any]]:
  """Rows for ``losses`` (same parameters) timed in alternation on the same embeddings. Every row
  after the first also gives its largest |difference| from the first's value and gradients."""
  k_img, k_txt = jax.random.split(key)
  img = contrastive.l2_normalize(jax.random.normal(k_img, (batch, dim), jnp.float32))
  txt = contrastive.l2_normalize(jax.random.normal(k_txt, (batch, dim), jnp.float32))
  args = (img, txt, *_params(losses[0]))
  steps = {loss: jax.jit(jax.value_and_grad(LOSSES[loss], argnums=tuple(range(len(args)))))
           for loss in losses}
  times = timing.median_seconds_interleaved(steps, *args, repeats=repeats)
  first = jax.tree.leaves(steps[losses[0]](*args))
  rows = []
  for loss in losses:
    extra = {}
    if loss != losses[0]:
      diffs = [jnp.max(jnp.abs(a - b)) for a, b in zip(jax.tree.leaves(steps[loss](*args)), first)]
      extra[f"max_abs_diff_vs_{losses[0]}"] = float(max(diffs))
    rows.append(_row(loss, batch, dim, times[loss], peak_flop_per_s, **extra))
  return rows


def _clip_goal(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """The best CLIP variant at ``CLIP_GOAL_BATCH`` against ``CLIP_BOUND_GOAL``."""
  clip = [r for r in rows if r["loss"].startswith("clip") and r["batch"] == CLIP_GOAL_BATCH]
  if not clip:
    return dict(skipped=f"B={CLIP_GOAL_BATCH} not among the batch sizes")
  best = min(clip, key=lambda r: r["median_s"])
  return dict(batch=CLIP_GOAL_BATCH, goal=CLIP_BOUND_GOAL, variant=best["loss"],
              bound_ratio=best["bound_ratio"], meets_goal=best["bound_ratio"] <= CLIP_BOUND_GOAL)


def _compiled_memory(fn, mesh, batch: int, dim: int) -> Dict[str, int]:
  emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=NamedSharding(mesh, P("data")))
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  step = jax.jit(jax.value_and_grad(parallel.shard_map_loss(fn, mesh), argnums=(0, 1, 2, 3)))
  stats = step.lower(emb, emb, scalar, scalar).compile().memory_analysis()
  out = {name: int(getattr(stats, name)) for name in (
      "temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
      "alias_size_in_bytes", "peak_memory_in_bytes") if hasattr(stats, name)}
  out["total_bytes"] = (out["temp_size_in_bytes"] + out["argument_size_in_bytes"] +
                        out["output_size_in_bytes"] - out["alias_size_in_bytes"])
  return out


def memory(n_devices: int = 8, batch: int = 32768, dim: int = 256) -> Dict[str, Any]:
  """Compiled memory of gathered vs chunked SigLIP on ``n_devices`` (0: skipped)."""
  if n_devices == 0:
    return dict(skipped="not requested (n_devices_memory=0)")
  have = jax.device_count()
  if have < n_devices:
    return dict(skipped=f"needs {n_devices} devices, jax sees {have} (on a CPU host: XLA_FLAGS="
                        f"--xla_force_host_platform_device_count={n_devices} before importing jax)")
  if batch % n_devices:
    raise ValueError(f"memory_batch={batch} must be divisible by n_devices_memory={n_devices}.")
  mesh = parallel.data_mesh(jax.devices()[:n_devices])
  gathered = _compiled_memory(contrastive.siglip_loss, mesh, batch, dim)
  chunked = _compiled_memory(contrastive.siglip_loss_chunked, mesh, batch, dim)
  ratio_temp = chunked["temp_size_in_bytes"] / gathered["temp_size_in_bytes"]
  return dict(batch=batch, dim=dim, devices=n_devices, per_device=True,
              gathered=gathered, chunked=chunked, ratio_temp=ratio_temp,
              ratio_total=chunked["total_bytes"] / gathered["total_bytes"],
              logits_bytes_gathered=4 * (batch // n_devices) * batch,
              logits_bytes_chunked=4 * (batch // n_devices) ** 2,
              goal=MEMORY_GOAL, meets_goal=ratio_temp <= MEMORY_GOAL)


def run(batch_sizes: Sequence[int] = (1024, 4096, 8192), dim: int = 256,
        n_devices_memory: int = 8, memory_batch: int = 32768, repeats: int = 7,
        seed: int = 0) -> Dict[str, Any]:
  """All measurements, as a JSON-able dict: ``peak`` (float32 and bfloat16 matmul), ``timing``
  rows (clip, clip_fused, siglip at each batch size), ``clip_goal`` and the ``memory`` dict."""
  if repeats < 5:
    raise ValueError(f"repeats={repeats}: the median needs at least 5 timed runs.")
  peak = {jnp.dtype(dtype).name: timing.matmul_peak(dtype=dtype, repeats=repeats)
          for dtype in (jnp.float32, jnp.bfloat16)}
  peak_flop_per_s = peak["float32"]["flop_per_s"]
  key = jax.random.key(seed)
  rows = []
  for losses in (("clip", "clip_fused"), ("siglip",)):
    for batch in batch_sizes:
      rows += _time_losses(losses, batch, dim, repeats, jax.random.fold_in(key, batch),
                           peak_flop_per_s)
  device = jax.devices()[0]
  return dict(suite="contrastive", backend=jax.default_backend(), device_kind=device.device_kind,
              jax_version=jax.__version__, peak=peak, timing=rows, clip_goal=_clip_goal(rows),
              memory=memory(n_devices_memory, memory_batch, dim))


def format_table(result: Dict[str, Any]) -> str:
  mib = lambda n: f"{n / 2**20:,.1f} MiB"
  lines = [f"contrastive losses, forward+backward, single device ({result['backend']}, "
           f"{result['device_kind']}, jax {result['jax_version']})",
           "jitted matmul peak: " + ", ".join(
               f"{name} {p['flop_per_s'] / 1e9:.1f} GFLOP/s (n={p['n']})"
               for name, p in result["peak"].items()),
           f"{'loss':<12}{'B':>7}{'D':>6}{'median ms':>12}{'min ms':>10}{'GFLOP/s':>10}"
           f"{'of peak':>9}{'x bound':>9}"]
  for row in result["timing"]:
    lines.append(f"{row['loss']:<12}{row['batch']:>7}{row['dim']:>6}"
                 f"{1e3 * row['median_s']:>12.2f}{1e3 * row['min_s']:>10.2f}"
                 f"{row['flop_per_s'] / 1e9:>10.1f}{row['fraction_of_peak']:>9.2f}"
                 f"{row['bound_ratio']:>9.2f}")
  goal = result["clip_goal"]
  if "skipped" in goal:
    lines.append(f"CLIP bound goal: skipped ({goal['skipped']})")
  else:
    lines.append(f"CLIP at B={goal['batch']}: best variant {goal['variant']}, "
                 f"{goal['bound_ratio']:.2f}x the float32 matmul bound "
                 f"(goal <= {goal['goal']:.2f}x: {'met' if goal['meets_goal'] else 'NOT met'})")
  mem = result["memory"]
  if "skipped" in mem:
    lines.append(f"memory: skipped ({mem['skipped']})")
    return "\n".join(lines)
  lines += ["", f"SigLIP under shard_map, B={mem['batch']}, D={mem['dim']}, {mem['devices']} devices,"
            " compiled memory per device (forward+backward)",
            f"{'variant':<10}{'temp':>14}{'total':>14}{'logits block':>15}"]
  for name in ("gathered", "chunked"):
    lines.append(f"{name:<10}{mib(mem[name]['temp_size_in_bytes']):>14}"
                 f"{mib(mem[name]['total_bytes']):>14}{mib(mem[f'logits_bytes_{name}']):>15}")
  lines.append(f"chunked / gathered: temp {mem['ratio_temp']:.3f}, total {mem['ratio_total']:.3f}"
               f" (goal <= {mem['goal']:.3f}: {'met' if mem['meets_goal'] else 'NOT met'})")
  return "\n".join(lines)


if __name__ == "__main__":
  print(format_table(run()))
