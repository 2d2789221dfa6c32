"""Train suite: examples/s of each study's main model's update step, on 1 device and on all of them.

The step is ``invariance.train``'s own jitted update (forward + backward + Adam, parameters
replicated, batch sharded on the ``("data",)`` mesh), at the sizes of the study's default flagfile:

  * ``orbit/cnn_gap``      circular ConvNet (16, 16, 16 channels) + global average pool, 24 x 24 x 1
                           canvas, batch 64 (experiments/configs/orbit.flags);
  * ``orbit/orbit_full``   full translation-orbit model of an MLP (64, 64), fast path, |G| = 576,
                           batch 64;
  * ``contrastive/clip``   the dual encoder (32 x 32 scenes, caption tokens, CLIP loss, embedding
                           dim 8), batch 128 (experiments/configs/contrastive.flags); the recovery
                           study pretrains and recaptions this same model.

The batch is placed on the devices once (host input is not timed). The one-device and
all-device steps are timed in alternation (``timing.median_seconds_interleaved``), and
``speedup`` = time on 1 device / time on all devices. On XLA:CPU the devices are virtual
(``--xla_force_host_platform_device_count``) and share the machine's cores. Goal (contrastive
step): all 8 virtual devices >= 1.5 x one device.

Imports no tfds or grain (the GPU image has neither).
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import jax
import numpy as np
import optax

from experiments.benchmarks import timing
from invariance import dual_encoder, encoders, groups, orbit, parallel, train
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


def _models() -> Dict[str, Any]:
  """name -> (loss_fn, params, host batch), at the default flagfiles' sizes."""
  cnn = encoders.CircularCNN((16, 16, 16))
  mlp = encoders.MLP((64, 64))
  orbit_model = orbit.OrbitModel(mlp, groups.Translations(24, 24), mode="fast")
  tok = captions.Tokenizer()
  dual = dual_encoder.DualEncoder(tok.vocab_size, 8, "clip")
  k_img, k_tok = jax.random.split(jax.random.key(2))
  images = np.asarray(jax.random.uniform(k_img, (128, 32, 32, 3)))
  tokens = np.asarray(jax.random.randint(k_tok, (128, tok.max_len), 0, tok.vocab_size))
  return {
      "orbit/cnn_gap": _classifier(lambda p, x, r: cnn.apply(p, x), cnn.init, 64, 24),
      "orbit/orbit_full": _classifier(lambda p, x, r: orbit_model.apply(p, x, r), mlp.init, 64,
                                      24),
      "contrastive/clip": (dual_encoder.make_loss_fn(dual),
                           dual.init(jax.random.key(3), *dual_encoder.example_inputs(
                               32, tok.max_len)),
                           {"images": images, "tokens": tokens}),
  }


def _stepper(loss_fn, params, batch, mesh) -> Callable[[], jax.Array]:
  """A no-argument function doing one update on ``mesh`` (its state carried across calls: the
  jitted step donates its parameters)."""
  optimizer = optax.adam(1e-3)
  rng = jax.random.key(4)
  step = train._jitted_step(loss_fn, optimizer, mesh, str(jax.random.key_impl(rng)))  # pylint: disable=protected-access
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS))
  state = {"params": train.to_global(params, replicated)}
  state["opt"] = optimizer.init(state["params"])
  key_data = train.to_global(jax.random.key_data(rng), replicated)
  batch = train.to_global(batch, sharded)

  def one_step():
    state["params"], state["opt"], loss, _ = step(state["params"], state["opt"], batch, key_data, 0)
    return loss

  return one_step


def run(repeats: int = 7) -> Dict[str, Any]:
  n_all = jax.device_count()
  meshes = {"1": parallel.data_mesh(jax.devices()[:1])}
  if n_all > 1:
    meshes[str(n_all)] = parallel.data_mesh()
  rows = []
  for name, (loss_fn, params, batch) in _models().items():
    steppers = {k: _stepper(loss_fn, params, batch, mesh) for k, mesh in meshes.items()}
    times = timing.median_seconds_interleaved(steppers, repeats=repeats)
    size = int(len(next(iter(batch.values()))))
    row = {"model": name, "batch": size,
           "per_devices": {k: {**t, "examples_per_s": size / t["median_s"]}
                           for k, t in times.items()}}
    if n_all > 1:
      row["speedup"] = times["1"]["median_s"] / times[str(n_all)]["median_s"]
    rows.append(row)
  goal = next(r for r in rows if r["model"] == GOAL_MODEL)
  return {"suite": "train", "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind, "devices": n_all, "rows": rows,
          "goal": {"model": GOAL_MODEL, "speedup_at_least": SPEEDUP_GOAL,
                   "speedup": goal.get("speedup"),
                   "met": goal.get("speedup", 0.0) >= SPEEDUP_GOAL if n_all >= 8 else None}}


def format_table(result: Dict[str, Any]) -> str:
  n = result["devices"]
  lines = [f"train step (forward + backward + Adam), examples/s ({result['backend']}, "
           f"{result['device_kind']}, 1 vs {n} devices)",
           f"{'model':<20}{'batch':>6}{'1 device':>12}{f'{n} devices':>12}{'speedup':>9}"]
  for r in result["rows"]:
    per = r["per_devices"]
    many = f"{per[str(n)]['examples_per_s']:>12,.0f}" if str(n) in per else f"{'-':>12}"
    speed = f"{r['speedup']:>9.2f}" if "speedup" in r else f"{'-':>9}"
    lines.append(f"{r['model']:<20}{r['batch']:>6}{per['1']['examples_per_s']:>12,.0f}{many}{speed}")
  g = result["goal"]
  verdict = {True: "met", False: "NOT met", None: f"not measured (needs 8 devices, have {n})"}
  lines.append(f"goal: {g['model']} on 8 devices >= {g['speedup_at_least']} x one device: "
               f"{verdict[g['met']]}")
  return "\n".join(lines)
