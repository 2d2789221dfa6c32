"""Train suite: examples/s of each study's main model's update step, on 1 device and on all of them.

The step is ``invariance.train``'s own jitted update (forward + backward + Adam, parameters
replicated, batch sharded on the ``("data",)`` mesh), at the sizes of the study's default flagfile:

  * ``orbit/cnn_gap``      the orbit study's circular ConvNet + global average pool and
  * ``orbit/orbit_full``   its full translation-orbit model of an MLP (fast path), both built by
                           ``invariance.models`` from the study's default config (``OrbitConfig()``:
                           channels, widths, canvas and batch size; experiments/orbit_config.py);
  * ``contrastive/clip``   the dual encoder (32 x 32 scenes, caption tokens, CLIP loss, embedding
                           dim 8), batch 128 (experiments/configs/contrastive.flags); the recovery
                           study pretrains and recaptions this same model.

The batch is placed on the devices once (host input is not timed). The one-device and
all-device steps are timed in alternation (``timing.median_seconds_interleaved``), and
``speedup`` = time on 1 device / time on all devices. ``flops`` is XLA's cost analysis of the
compiled one-device step; ``fraction_of_peak`` (model FLOP utilisation on one device) divides its
achieved FLOP/s by the matmul peak measured in the same run (float32: the studies train in f32; the
bf16 peak is reported beside it). On XLA:CPU the devices are virtual
(``--xla_force_host_platform_device_count``) and share the machine's cores. Goal (contrastive
step): all 8 virtual devices >= 1.5 x one device.

Imports no tfds or grain (the GPU image has neither).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks import timing
from experiments.orbit_config import OrbitConfig
from invariance import dual_encoder, groups, models, parallel, train
from invariance.data import captions

SPEEDUP_GOAL = 1.5
GOAL_MODEL = "contrastive/clip"


def _classifier(net_apply: Callable, init: Callable, batch: int, hw: int):
  kx, ky = jax.random.split(jax.random.key(0))
  x = np.asarray(jax.random.uniform(kx, (batch, hw, hw, 1)))
  y = np.asarray(jax.random.randint(ky, (batch,), 0, 10))

  def loss_fn(params, b, rng):
    logits = net_apply(params, b["images"], rng)
    return train.cross_entropy(logits, b["labels"]), {}

  return loss_fn, init(jax.random.key(1), x[:1]), {"images": x, "labels": y}


def _orbit_model(name: str):
  """``name`` as the orbit study's default run trains it (its config's sizes, its train logits)."""
  cfg = OrbitConfig()
  model = models.make(name, cfg.model_spec(), groups.Translations(cfg.canvas, cfg.canvas))
  return _classifier(lambda p, x, r: model.train_logits(p, {"images": x}, r), model.init,
                     cfg.batch_size, cfg.canvas)


def _models() -> Dict[str, Any]:
  """name -> (loss_fn, params, host batch), at the default configs' sizes."""
  tok = captions.Tokenizer()
  dual = dual_encoder.DualEncoder(tok.vocab_size, 8, "clip")
  k_img, k_tok = jax.random.split(jax.random.key(2))
  images = np.asarray(jax.random.uniform(k_img, (128, 32, 32, 3)))
  tokens = np.asarray(jax.random.randint(k_tok, (128, tok.max_len), 0, tok.vocab_size))
  return {
      "orbit/cnn_gap": _orbit_model("cnn_gap"),
      "orbit/orbit_full": _orbit_model("orbit_full"),
      "contrastive/clip": (dual_encoder.make_loss_fn(dual),
                           dual.init(jax.random.key(3), *dual_encoder.example_inputs(
                               32, tok.max_len)),
                           {"images": images, "tokens": tokens}),
  }


def _stepper(loss_fn, params, batch, mesh):
  """A no-argument function doing one update on ``mesh`` (its state carried across calls: the
  jitted step donates its parameters), and the step's FLOPs from XLA's cost analysis."""
  ready = train.setup(loss_fn, params, optax.adam(1e-3), mesh, jax.random.key(4))
  state = {"params": ready.params, "opt": ready.opt_state}
  batch = train.to_global(batch, ready.batch_sharding)
  step, key_data = ready.step, ready.key_data

  def one_step():
    state["params"], state["opt"], loss, _ = step(state["params"], state["opt"], batch, key_data, 0)
    return loss

  cost = step.lower(state["params"], state["opt"], batch, key_data, 0).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return one_step, float(cost.get("flops", float("nan"))) if cost else float("nan")


def run(repeats: int = 7, peak: Dict[str, Any] = None) -> Dict[str, Any]:
  """``peak``: the contrastive suite's ``{"float32": ..., "bfloat16": ...}`` matmul peaks (measured
  here if not given)."""
  if peak is None:
    peak = {name: timing.matmul_peak(dtype=dtype, repeats=repeats)
            for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))}
  n_all = jax.device_count()
  meshes = {"1": parallel.data_mesh(jax.devices()[:1])}
  if n_all > 1:
    meshes[str(n_all)] = parallel.data_mesh()
  rows = []
  for name, (loss_fn, params, batch) in _models().items():
    made = {k: _stepper(loss_fn, params, batch, mesh) for k, mesh in meshes.items()}
    times = timing.median_seconds_interleaved({k: m[0] for k, m in made.items()},
                                              repeats=repeats)
    size = int(len(next(iter(batch.values()))))
    flops = made["1"][1]
    row = {"model": name, "batch": size, "flops": flops,
           "fraction_of_peak": {d: flops / times["1"]["median_s"] / p["flop_per_s"]
                                for d, p in peak.items()},
           "per_devices": {k: {**t, "examples_per_s": size / t["median_s"]}
                           for k, t in times.items()}}
    if n_all > 1:
      row["speedup"] = times["1"]["median_s"] / times[str(n_all)]["median_s"]
    rows.append(row)
  return {"suite": "train", "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind, "devices": n_all, "rows": rows,
          "peak_flop_per_s": {d: p["flop_per_s"] for d, p in peak.items()},
          "goal": goal_of(rows, n_all)}


def goal_of(rows, n_devices: int) -> Dict[str, Any]:
  """The issue's goal on ``GOAL_MODEL``'s row: all devices >= 1.5 x one device (None when fewer
  than 8 devices were measured)."""
  row = next(r for r in rows if r["model"] == GOAL_MODEL)
  return {"model": GOAL_MODEL, "speedup_at_least": SPEEDUP_GOAL, "speedup": row.get("speedup"),
          "met": row.get("speedup", 0.0) >= SPEEDUP_GOAL if n_devices >= 8 else None}


def format_table(result: Dict[str, Any]) -> str:
  """The table; with ``experiments.bench``'s ``single_process`` entries (a 1-device process) when
  present, else the 1-device mesh of this process."""
  n = result["devices"]
  lines = [f"train step (forward + backward + Adam), examples/s ({result['backend']}, "
           f"{result['device_kind']})",
           f"{'model':<18}{'batch':>6}{'MFLOP/step':>11}{'1 dev proc':>11}{'1 of ' + str(n):>9}"
           f"{f'{n} devices':>11}{'speedup':>9}{'(vs 1 of ' + str(n) + ')':>12}{'MFU f32':>9}"]
  for r in result["rows"]:
    per, single = r["per_devices"], r.get("single_process")
    cell = lambda v, fmt, w: f"{v:>{w}{fmt}}" if v is not None else f"{'-':>{w}}"
    many = per.get(str(n)) if n > 1 else None
    mfu = (single or r)["fraction_of_peak"]["float32"]
    lines.append(
        f"{r['model']:<18}{r['batch']:>6}{r['flops'] / 1e6:>11,.0f}"
        + cell(single and single["examples_per_s"], ",.0f", 11)
        + cell(per["1"]["examples_per_s"], ",.0f", 9)
        + cell(many and many["examples_per_s"], ",.0f", 11)
        + cell(r.get("speedup_vs_single_process"), ".2f", 9)
        + cell(r.get("speedup"), ".2f", 12) + f"{mfu:>9.3f}")
  g = result["goal"]
  if g["met"] is None:
    lines.append(f"goal: {g['model']} on 8 devices >= {g['speedup_at_least']} x one device: "
                 f"not measured (needs 8 devices, have {n})")
  else:
    verdict = lambda ok: "met" if ok else "NOT met"
    text = (f"goal: {g['model']} on {n} devices >= {g['speedup_at_least']} x one device: "
            f"{g['speedup']:.2f}x the 1-device mesh of the same process ({verdict(g['met'])})")
    if "speedup_vs_single_process" in g:
      text += (f", {g['speedup_vs_single_process']:.2f}x a 1-device process "
               f"({verdict(g['met_vs_single_process'])})")
    lines.append(text)
  return "\n".join(lines)
