"""Contrastive losses: forward+backward time, and compiled memory (tiled vs materialised on one
device, rings vs gathered across devices).

(0) Peak: the machine's jitted n x n x n matmul FLOP/s in float32 and in bfloat16
    (``timing.matmul_peak``); the float32 one is the ceiling the losses are measured against.
(a) Time: median wall time of ``jit(value_and_grad(loss))`` w.r.t. both embeddings and the
    temperature (and bias), single device, at each batch size, the variants of one loss timed in
    alternation: CLIP as ``clip`` (autodiff ``clip_loss``), ``clip_fused`` (``clip_loss_fused``'s
    hand-written backward) and ``clip_tiled`` (``clip_loss_tiled``), SigLIP as ``siglip`` and
    ``siglip_tiled``. FLOPs count the three B x B x D products of forward + backward, 6 B^2 D;
    each row gives the achieved FLOP/s, its fraction of the float32 peak, and ``bound_ratio`` =
    median time / (6 B^2 D / peak). ``own_bound_ratio`` is the same against the variant's own
    matmul FLOPs: 8 B^2 D for the tiled losses (their backward pass recomputes the logits), 6 B^2 D
    otherwise. Goals at B = 8192 (D = 256): the best CLIP variant within 1.25x of the 6 B^2 D bound
    (``clip_goal``); ``clip_tiled`` within 1.25x of its own 8 B^2 D bound and not slower than
    ``clip_fused`` (``tiled_goal``).
(b) Memory, one device: XLA's memory analysis of the compiled forward + backward of the tiled
    losses against the materialised ones (``clip_loss``, ``clip_loss_fused``, ``siglip_loss``) at
    B = 65,536 and 131,072 (``tiled_memory``). The programs are compiled, never run, so B can be
    far beyond this machine's memory. Goal: tiled temporaries <= 1/16 of the materialised ones.
(c) Memory, D devices: ``siglip_loss`` / ``clip_loss`` (each device gathers all texts: (B/D) x B
    logits) against ``siglip_loss_chunked`` / ``clip_loss_chunked`` (ring: (B/D) x (B/D) logits)
    under ``shard_map`` on D devices, forward + backward, from XLA's memory analysis of the
    compiled program (per device; nothing runs). Goal: chunked <= 1/8 of gathered at B = 32768 on
    8 devices (SigLIP's ratio at the top level of ``memory``, CLIP's in ``memory["clip"]``).

``python -m experiments.benchmarks.contrastive`` prints the table; it forces 8 host devices
(``XLA_FLAGS``) when run as a script. A caller that imports ``run`` must set that flag itself,
before jax is imported, or the memory part (c) is skipped (and says so).
"""
import os

if __name__ == "__main__":
  _FLAG = "--xla_force_host_platform_device_count=8"
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import functools
from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.benchmarks import timing
from invariance import contrastive, parallel

MEMORY_GOAL = 1 / 8
CLIP_BOUND_GOAL = 1.25   # best CLIP variant's time / matmul bound, at CLIP_GOAL_BATCH
CLIP_GOAL_BATCH = 8192
TILED_MEMORY_GOAL = 1 / 16   # tiled / materialised temporaries, one device
TILED_MEMORY_BATCHES = (65536, 131072)
MATERIALISED_MAX_BATCH = 32768   # above: only the tiled losses are timed (B x B logits: 16 GiB at 65,536)
TILED_BOUND_GOAL = 1.25  # clip_tiled's time / its own 8 B^2 D bound, at CLIP_GOAL_BATCH
TILED_VS_FUSED_GOAL = 1.0  # clip_tiled's time / clip_fused's, at CLIP_GOAL_BATCH
LOSSES = {"clip": contrastive.clip_loss, "clip_fused": contrastive.clip_loss_fused,
          "clip_tiled": contrastive.clip_loss_tiled, "siglip": contrastive.siglip_loss,
          "siglip_tiled": contrastive.siglip_loss_tiled}
GROUPS = (("clip", "clip_fused", "clip_tiled"), ("siglip", "siglip_tiled"))


def _params(loss: str):
  if loss.startswith("clip"):
    return (contrastive.init_clip_temperature(),)
  return contrastive.init_siglip_params()


def _loss_fn(loss: str, tile: int):
  return functools.partial(LOSSES[loss], tile=tile) if loss.endswith("_tiled") else LOSSES[loss]


def _matmuls(loss: str) -> int:
  """B x B x D products in forward + backward: the tiled losses recompute the logits."""
  return 4 if loss.endswith("_tiled") else 3


def _row(loss: str, batch: int, dim: int, t: Dict[str, Any], peak_flop_per_s: float,
         **extra) -> Dict[str, Any]:
  flops = 6 * batch * batch * dim
  bound_s = flops / peak_flop_per_s
  own_flops = 2 * _matmuls(loss) * batch * batch * dim
  return dict(loss=loss, batch=batch, dim=dim, flops=flops, flop_per_s=flops / t["median_s"],
              fraction_of_peak=bound_s / t["median_s"], bound_s=bound_s,
              bound_ratio=t["median_s"] / bound_s, own_flops=own_flops,
              own_bound_ratio=t["median_s"] * peak_flop_per_s / own_flops, **t, **extra)


def _time_losses(losses: Sequence[str], batch: int, dim: int, repeats: int, key,
                 peak_flop_per_s: float, tile: int) -> List[Dict[str, Any]]:
  """Rows for ``losses`` (same parameters) timed in alternation on the same embeddings. Every row
  after the first also gives its largest |difference| from the first's value and gradients."""
  k_img, k_txt = jax.random.split(key)
  img = contrastive.l2_normalize(jax.random.normal(k_img, (batch, dim), jnp.float32))
  txt = contrastive.l2_normalize(jax.random.normal(k_txt, (batch, dim), jnp.float32))
  args = (img, txt, *_params(losses[0]))
  steps = {loss: jax.jit(jax.value_and_grad(_loss_fn(loss, tile),
                                            argnums=tuple(range(len(args)))))
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


def _tiled_goal(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """``clip_tiled`` at ``CLIP_GOAL_BATCH``: against its own 8 B^2 D bound and against
  ``clip_fused`` (timed in alternation with it)."""
  at = {r["loss"]: r for r in rows if r["batch"] == CLIP_GOAL_BATCH}
  if "clip_tiled" not in at or "clip_fused" not in at:
    return dict(skipped=f"B={CLIP_GOAL_BATCH} not among the batch sizes")
  tiled = at["clip_tiled"]
  vs_fused = tiled["median_s"] / at["clip_fused"]["median_s"]
  return dict(batch=CLIP_GOAL_BATCH, own_bound_ratio=tiled["own_bound_ratio"],
              own_bound_goal=TILED_BOUND_GOAL,
              meets_own_bound_goal=tiled["own_bound_ratio"] <= TILED_BOUND_GOAL,
              time_vs_fused=vs_fused, vs_fused_goal=TILED_VS_FUSED_GOAL,
              meets_vs_fused_goal=vs_fused <= TILED_VS_FUSED_GOAL)


def _memory_stats(compiled) -> Dict[str, int]:
  stats = compiled.memory_analysis()
  out = {name: int(getattr(stats, name)) for name in (
      "temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
      "alias_size_in_bytes", "peak_memory_in_bytes") if hasattr(stats, name)}
  out["total_bytes"] = (out["temp_size_in_bytes"] + out["argument_size_in_bytes"] +
                        out["output_size_in_bytes"] - out["alias_size_in_bytes"])
  return out


def _compiled_memory(fn, mesh, batch: int, dim: int, n_params: int) -> Dict[str, int]:
  emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=NamedSharding(mesh, P("data")))
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  step = jax.jit(jax.value_and_grad(parallel.shard_map_loss(fn, mesh),
                                    argnums=tuple(range(2 + n_params))))
  return _memory_stats(step.lower(emb, emb, *[scalar] * n_params).compile())


def _ring_memory(gathered_fn, chunked_fn, n_params: int, mesh, batch: int,
                 n_devices: int, dim: int) -> Dict[str, Any]:
  gathered = _compiled_memory(gathered_fn, mesh, batch, dim, n_params)
  chunked = _compiled_memory(chunked_fn, mesh, batch, dim, n_params)
  ratio_temp = chunked["temp_size_in_bytes"] / gathered["temp_size_in_bytes"]
  return dict(batch=batch, dim=dim, devices=n_devices, per_device=True,
              gathered=gathered, chunked=chunked, ratio_temp=ratio_temp,
              ratio_total=chunked["total_bytes"] / gathered["total_bytes"],
              logits_bytes_gathered=4 * (batch // n_devices) * batch,
              logits_bytes_chunked=4 * (batch // n_devices) ** 2,
              goal=MEMORY_GOAL, meets_goal=ratio_temp <= MEMORY_GOAL)


def memory(n_devices: int = 8, batch: int = 32768, dim: int = 256) -> Dict[str, Any]:
  """Compiled memory of gathered vs chunked SigLIP (top-level keys) and CLIP (``clip``) on
  ``n_devices`` (0: skipped)."""
  if n_devices == 0:
    return dict(skipped="not requested (n_devices_memory=0)")
  have = jax.device_count()
  if have < n_devices:
    return dict(skipped=f"needs {n_devices} devices, jax sees {have} (on a CPU host: XLA_FLAGS="
                        f"--xla_force_host_platform_device_count={n_devices} before importing jax)")
  if batch % n_devices:
    raise ValueError(f"memory_batch={batch} must be divisible by n_devices_memory={n_devices}.")
  mesh = parallel.data_mesh(jax.devices()[:n_devices])
  siglip = _ring_memory(contrastive.siglip_loss, contrastive.siglip_loss_chunked, 2, mesh, batch,
                        n_devices, dim)
  clip = _ring_memory(contrastive.clip_loss, contrastive.clip_loss_chunked, 1, mesh, batch,
                      n_devices, dim)
  return dict(siglip, clip=clip)


def tiled_memory(batches: Sequence[int] = TILED_MEMORY_BATCHES, dim: int = 256,
                 tile: int = contrastive.DEFAULT_TILE) -> Dict[str, Any]:
  """Compiled memory (one device, forward + backward) of each loss at each batch size, and the
  tiled losses' temporaries over the materialised ones'. Compiled only, never run: at
  B = 131,072 the materialised logits alone are 64 GiB."""
  device = jax.devices()[0]
  rows = []
  for batch in batches:
    emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    stats = {}
    for loss in LOSSES:
      n_args = 2 + len(_params(loss))
      step = jax.jit(jax.value_and_grad(_loss_fn(loss, tile), argnums=tuple(range(n_args))))
      stats[loss] = _memory_stats(step.lower(emb, emb, *[scalar] * (n_args - 2)).compile())
    temp = {loss: s["temp_size_in_bytes"] for loss, s in stats.items()}
    ratios = {"clip_tiled_vs_clip": temp["clip_tiled"] / temp["clip"],
              "clip_tiled_vs_clip_fused": temp["clip_tiled"] / temp["clip_fused"],
              "siglip_tiled_vs_siglip": temp["siglip_tiled"] / temp["siglip"]}
    rows.append(dict(batch=batch, dim=dim, tile=tile, logits_bytes=4 * batch * batch,
                     tile_logits_bytes=4 * batch * min(tile, batch), stats=stats,
                     ratio_temp=ratios, goal=TILED_MEMORY_GOAL,
                     meets_goal=all(r <= TILED_MEMORY_GOAL for r in ratios.values())))
  return dict(device_kind=device.device_kind, rows=rows, goal=TILED_MEMORY_GOAL,
              meets_goal=all(r["meets_goal"] for r in rows))


def run(batch_sizes: Sequence[int] = (1024, 4096, 8192), dim: int = 256,
        n_devices_memory: int = 8, memory_batch: int = 32768, repeats: int = 7,
        seed: int = 0, tile: int = contrastive.DEFAULT_TILE,
        tiled_memory_batches: Sequence[int] = TILED_MEMORY_BATCHES) -> Dict[str, Any]:
  """All measurements, as a JSON-able dict: ``peak`` (float32 and bfloat16 matmul), ``timing``
  rows (each variant of ``GROUPS`` at each batch size), ``clip_goal``, ``tiled_goal``,
  ``tiled_memory`` (one device) and the ``memory`` dict (rings, ``n_devices_memory`` devices)."""
  if repeats < 5:
    raise ValueError(f"repeats={repeats}: the median needs at least 5 timed runs.")
  tiled = tiled_memory(tiled_memory_batches, dim, tile)   # compile only: first, on an idle heap
  peak = {jnp.dtype(dtype).name: timing.matmul_peak(dtype=dtype, repeats=repeats)
          for dtype in (jnp.float32, jnp.bfloat16)}
  peak_flop_per_s = peak["float32"]["flop_per_s"]
  key = jax.random.key(seed)
  rows = []
  for losses in GROUPS:
    for batch in batch_sizes:
      timed = [loss for loss in losses if batch <= MATERIALISED_MAX_BATCH or "_tiled" in loss]
      rows += _time_losses(timed, batch, dim, repeats, jax.random.fold_in(key, batch),
                           peak_flop_per_s, tile)
  device = jax.devices()[0]
  return dict(suite="contrastive", backend=jax.default_backend(), device_kind=device.device_kind,
              jax_version=jax.__version__, tile=tile, peak=peak, timing=rows,
              clip_goal=_clip_goal(rows), tiled_goal=_tiled_goal(rows), tiled_memory=tiled,
              memory=memory(n_devices_memory, memory_batch, dim))


def _ring_lines(name: str, mem: Dict[str, Any]) -> List[str]:
  mib = lambda n: f"{n / 2**20:,.1f} MiB"
  lines = ["", f"{name} under shard_map, B={mem['batch']}, D={mem['dim']}, {mem['devices']} "
           "devices, compiled memory per device (forward+backward)",
           f"{'variant':<10}{'temp':>14}{'total':>14}{'logits block':>15}"]
  for variant in ("gathered", "chunked"):
    lines.append(f"{variant:<10}{mib(mem[variant]['temp_size_in_bytes']):>14}"
                 f"{mib(mem[variant]['total_bytes']):>14}"
                 f"{mib(mem[f'logits_bytes_{variant}']):>15}")
  lines.append(f"chunked / gathered: temp {mem['ratio_temp']:.3f}, total {mem['ratio_total']:.3f}"
               f" (goal <= {mem['goal']:.3f}: {'met' if mem['meets_goal'] else 'NOT met'})")
  return lines


def format_table(result: Dict[str, Any]) -> str:
  met = lambda ok: "met" if ok else "NOT met"
  lines = [f"contrastive losses, forward+backward, single device ({result['backend']}, "
           f"{result['device_kind']}, jax {result['jax_version']}, tile {result.get('tile')})",
           "jitted matmul peak: " + ", ".join(
               f"{name} {p['flop_per_s'] / 1e9:.1f} GFLOP/s (n={p['n']})"
               for name, p in result["peak"].items()),
           f"{'loss':<14}{'B':>7}{'D':>6}{'median ms':>12}{'min ms':>10}{'GFLOP/s':>10}"
           f"{'of peak':>9}{'x bound':>9}{'x own':>8}"]
  for row in result["timing"]:
    lines.append(f"{row['loss']:<14}{row['batch']:>7}{row['dim']:>6}"
                 f"{1e3 * row['median_s']:>12.2f}{1e3 * row['min_s']:>10.2f}"
                 f"{row['flop_per_s'] / 1e9:>10.1f}{row['fraction_of_peak']:>9.2f}"
                 f"{row['bound_ratio']:>9.2f}{row['own_bound_ratio']:>8.2f}")
  lines.append("GFLOP/s, of peak and x bound count 6 B^2 D; x own counts each variant's own "
               "matmuls (8 B^2 D for the tiled ones)")
  goal = result["clip_goal"]
  if "skipped" in goal:
    lines.append(f"CLIP bound goal: skipped ({goal['skipped']})")
  else:
    lines.append(f"CLIP at B={goal['batch']}: best variant {goal['variant']}, "
                 f"{goal['bound_ratio']:.2f}x the float32 matmul bound "
                 f"(goal <= {goal['goal']:.2f}x: {met(goal['meets_goal'])})")
  goal = result["tiled_goal"]
  if "skipped" in goal:
    lines.append(f"tiled goals: skipped ({goal['skipped']})")
  else:
    lines.append(f"clip_tiled at B={goal['batch']}: {goal['own_bound_ratio']:.2f}x its own "
                 f"8 B^2 D bound (goal <= {goal['own_bound_goal']:.2f}x: "
                 f"{met(goal['meets_own_bound_goal'])}); {goal['time_vs_fused']:.2f}x "
                 f"clip_fused's time (goal <= {goal['vs_fused_goal']:.2f}x: "
                 f"{met(goal['meets_vs_fused_goal'])})")
  tiled = result["tiled_memory"]
  mib = lambda n: f"{n / 2**20:,.1f} MiB"
  lines += ["", f"tiled vs materialised, one device ({tiled['device_kind']}), compiled "
            "temporaries (forward+backward, compiled only)",
            f"{'B':>7}" + "".join(f"{loss:>14}" for loss in LOSSES) +
            f"{'tiled/clip':>12}{'tiled/fused':>12}{'sig t/sig':>11}"]
  for row in tiled["rows"]:
    r = row["ratio_temp"]
    lines.append(f"{row['batch']:>7}" + "".join(
        f"{mib(row['stats'][loss]['temp_size_in_bytes']):>14}" for loss in LOSSES) +
        f"{r['clip_tiled_vs_clip']:>12.4f}{r['clip_tiled_vs_clip_fused']:>12.4f}"
        f"{r['siglip_tiled_vs_siglip']:>11.4f}")
  lines.append(f"tiled / materialised temporaries: goal <= {tiled['goal']:.4f} at every B: "
               f"{met(tiled['meets_goal'])}")
  mem = result["memory"]
  if "skipped" in mem:
    lines.append(f"memory: skipped ({mem['skipped']})")
    return "\n".join(lines)
  lines += _ring_lines("SigLIP", mem)
  if "clip" in mem:
    lines += _ring_lines("CLIP", mem["clip"])
  return "\n".join(lines)


if __name__ == "__main__":
  print(format_table(run()))
