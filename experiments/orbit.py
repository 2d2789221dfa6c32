r"""Orbit study: hard, orbit, augmentation and no invariance side by side, on curated data.

    python -m experiments.orbit --flagfile=experiments/configs/orbit.flags

Translations (default): 8x8 digits placed only in the ``--support`` region (bottom half) of a
``--canvas`` canvas; evaluated on held-out digits placed in the support and in its complement (top
half), at every placement (maps), and over every group element (audit). Rotations
(``--group=rotations``): trained upright, tested upright and rotated by k x 90 degrees, k = 1..3.
Every arm trains under one convergence rule (``--eval_every``, ``--patience``, ``--min_delta``,
cap ``--steps``) on a validation split of held-out training digits.

config -> data (``orbit_data``) -> one row per run x seed (train, audit) -> report.
"""
from __future__ import annotations

import dataclasses
import functools
import time

from absl import logging
import jax
import numpy as np
import optax

from experiments import cli
from experiments import config
from experiments.orbit_config import OrbitConfig
from experiments import orbit_data
from experiments import orbit_report
from experiments import workdir as workdir_lib
from invariance import audit
from invariance import encoders
from invariance import evaluate
from invariance import models
from invariance import train
from invariance.data import curation
from invariance.data import pipeline
from invariance.data import sources

# -- one row --------------------------------------------------------------------------------------
def accuracy(eval_fn, split: dict) -> float:
  return float(np.mean(evaluate.batched_apply(eval_fn, split["images"], 256).argmax(-1)
                       == split["labels"]))


def placement_map(eval_fn, data: orbit_data.Data) -> list:
  """Accuracy of the test glyphs pasted at every non-wrapping position (row-major grid), all
  positions through ``eval_fn`` in one stream of full batches."""
  glyphs, n = data.glyphs, len(data.glyphs["labels"])
  canvases = np.concatenate([curation.paste(glyphs["images"], (data.group.height,) * 2,
                                            np.repeat(pos[None], n, 0)) for pos in data.grid])
  correct = (evaluate.batched_apply(eval_fn, canvases, 256).argmax(-1)
             == np.tile(glyphs["labels"], len(data.grid)))
  return correct.reshape(len(data.grid), n).mean(1).tolist()


def measure(eval_fn, cfg: OrbitConfig, data: orbit_data.Data, seed: int,
            with_audit: bool = True) -> dict:
  """Accuracies, the audit over the group (split inside / outside the support) and the map."""
  row = {"acc_in_support": accuracy(eval_fn, data.test_in),
         "acc_out_of_support": accuracy(eval_fn, data.test_out)}
  if with_audit:
    elements = audit.eval_elements(data.group, cfg.eval_elements, seed)
    x = data.test_in["images"][:cfg.eval_examples]
    inside = (orbit_data.inside_mask(data, elements, data.test_in["positions"][:len(x)])
              if "positions" in data.test_in else None)
    inv = audit.audit(eval_fn, x, data.group, elements, inside=inside)
    row.update(invariance_error=inv["batch_error"], invariance=inv)
  if data.grid is not None and cfg.map_examples:
    row["placement_map"] = placement_map(eval_fn, data)
  return row


def run_one(run: str, model: models.Model, seed: int, cfg: OrbitConfig, data: orbit_data.Data,
            workdir: workdir_lib.Workdir) -> dict:
  steps = cfg.steps_of(model.name)
  init_key, train_key = jax.random.split(jax.random.key(seed))
  params = jax.jit(model.init)(init_key, data.train["images"][:1])
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate,
                                                min(cfg.warmup_steps, steps - 1), steps)
  tcfg = train.TrainConfig(steps=steps, name=f"{run}/seed{seed}", log_every=cfg.log_every,
                           checkpoint_every=cfg.checkpoint_every,
                           **workdir.train_paths(run, seed, cfg),
                           early_stopping=train.EarlyStopping(cfg.eval_every, cfg.patience,
                                                              cfg.min_delta))
  eval_jit = jax.jit(model.eval_logits)
  params, history = train.fit(model.loss, params,
                              pipeline.train_batch_fn(data.train, cfg.batch_size, seed=seed),
                              _adam(schedule), tcfg, train_key,
                              schedule=schedule,
                              validate=lambda p: accuracy(functools.partial(eval_jit, p), data.val))
  row = {"model": run, "seed": seed, "step_cap": steps, "best_step": history["best_step"],
         "steps_run": history["last_step"], "val_acc": history["best_score"],
         "val_curve": history["val_curve"], "train_seconds": history["train_seconds"],
         "final_loss": history["loss"][-1] if history["loss"] else None,
         "num_params": models.num_params(params["net"]),
         **measure(functools.partial(eval_jit, params), cfg, data, seed)}
  if isinstance(model.net, encoders.MLP) and cfg.jensen_batches:
    row["jensen"] = audit.jensen_gaps(model.net, params["net"], data.test_in["images"],
                                      data.test_in["labels"], data.group,
                                      batches=cfg.jensen_batches)
  if model.name == "mlp_aug_full":       # the same parameters, averaged over the orbit at test time
    orbit_jit = jax.jit(models.orbit_eval_logits(model, data.group))
    # exactly invariant by construction (as orbit_full's audit shows): accuracies and maps only
    row["orbit_eval"] = measure(functools.partial(orbit_jit, params), cfg, data, seed,
                                with_audit=False)
  if model.name == "learned_aug":
    row["learned_width"] = models.learned_width(model, params)
  logging.info("%s seed %d: in %.3f out %.3f per-example inv %.2e flips %.3f, best step %d of %d "
               "(%.1fs)", run, seed, row["acc_in_support"], row["acc_out_of_support"],
               row["invariance"]["max_error_max"], row["invariance"]["flip_rate"],
               row["best_step"], row["steps_run"], row["train_seconds"])
  return row


@functools.lru_cache(maxsize=None)
def _adam(schedule):
  return optax.adam(schedule)     # one object per schedule: seeds reuse the compiled step


def main(cfg: OrbitConfig):
  # Nothing is written until the data is there (a missing dataset is a one-line error).
  workdir = workdir_lib.Workdir(cfg.workdir, "orbit", config.identity(cfg), create=False)
  datasets = {}

  def data_for(seed):
    data_seed = seed if cfg.data_seed < 0 else cfg.data_seed
    if data_seed not in datasets:
      try:
        loaded = sources.load_classification(cfg.dataset, data_dir=cfg.data_dir, seed=data_seed)
      except (ValueError, FileNotFoundError) as e:
        config.fail("dataset", cfg.dataset, str(e))
      source = sources.as_objects(loaded, cfg.object_size, cfg.channels)
      datasets[data_seed] = orbit_data.make(
          source, group=cfg.group, canvas=cfg.canvas, support=cfg.support,
          placements_per_image=cfg.placements_per_image, val_fraction=cfg.val_fraction,
          map_examples=cfg.map_examples, data_seed=data_seed)
    return datasets[data_seed]

  first = data_for(cfg.seeds[0])
  workdir.create()
  logging.info("orbit study: %s, %d train / %d val / %d + %d test examples, runs %s, seeds %s",
               cfg.group, len(first.train["labels"]), len(first.val["labels"]),
               len(first.test_in["labels"]), len(first.test_out["labels"]),
               ",".join(r for r, _, _ in cfg.runs()), list(cfg.seeds))
  # One model object per run: every seed reuses its compiled programs.
  zoo = {run: models.make(name, dataclasses.replace(spec, num_classes=first.num_classes),
                          first.group, first.support) for run, name, spec in cfg.runs()}
  rows, total, start = [], len(cfg.seeds) * len(zoo), time.perf_counter()
  for seed in cfg.seeds:
    for run, model in zoo.items():
      rows.append(workdir.row(f"{run}_seed{seed}",
                              lambda r=run, m=model, s=seed: run_one(r, m, s, cfg, data_for(s),
                                                                     workdir)))
      elapsed = time.perf_counter() - start
      logging.info("orbit study: %d/%d runs done, %.0f s, ETA %.0f s", len(rows), total, elapsed,
                   elapsed / len(rows) * (total - len(rows)))
  results = orbit_report.write(workdir, cfg, rows)
  print(workdir.file("results.md"))
  print(orbit_report.markdown(cfg, results))


if __name__ == "__main__":
  cli.run(OrbitConfig, main)
