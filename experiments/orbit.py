r"""Orbit study: hard, orbit, augmentation and no invariance side by side, on curated data.

    python -m experiments.orbit --workdir=workdir/orbit          # the default run (OrbitConfig)
    python -m experiments.orbit --flagfile=experiments/configs/orbit_ablations.flags

Translations (default): 8x8 digits placed only in the ``--support`` region (bottom half) of a
``--canvas`` canvas; evaluated on held-out digits placed in the support and in its complement (top
half), at every placement (maps), and over every group element (audit). Rotations
(``--group=rotations``): trained upright, tested upright and rotated by k x 90 degrees, k = 1..3.
Every arm trains under one convergence rule (``--eval_every``, ``--patience``, ``--min_delta``,
cap ``--steps``) on a validation split of held-out training digits.

config (``orbit_config``) -> data (``orbit_data``) -> one row per arm x seed (train here, measure
in ``orbit_measure``) -> ``runner.run_all`` -> report (``orbit_report``).
"""
from __future__ import annotations

import functools

from absl import logging
import jax
import optax

from experiments import cli
from experiments import config
from experiments import orbit_data
from experiments import orbit_measure
from experiments import orbit_report
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.orbit_config import OrbitConfig
from experiments.orbit_config import OrbitRun
from invariance import audit
from invariance import encoders
from invariance import models
from invariance import train
from invariance.data import pipeline

config.define_flags(OrbitConfig)


@functools.lru_cache(maxsize=None)
def _adam(schedule):
  return optax.adam(schedule)     # one object per schedule: seeds reuse the compiled step


def train_and_measure(run: OrbitRun, model: models.Model, cfg: OrbitConfig,
                      data: orbit_data.Data, workdir: workdir_lib.Workdir) -> dict:
  """Train ``run``'s model under the convergence rule, keep its best parameters, measure them."""
  name, seed, steps = run.arm.name, run.seed, cfg.steps_of(run.arm.model)
  init_key, train_key = jax.random.split(jax.random.key(seed))
  params = jax.jit(model.init)(init_key, data.train["images"][:1])
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate,
                                                min(cfg.warmup_steps, steps - 1), steps)
  tcfg = train.TrainConfig(steps=steps, name=f"{name}/seed{seed}", log_every=cfg.log_every,
                           checkpoint_every=cfg.checkpoint_every,
                           **workdir.train_paths(name, seed, cfg),
                           early_stopping=cfg.early_stopping())
  eval_jit = jax.jit(model.eval_logits)
  params, history = train.fit(
      model.loss, params, pipeline.train_batch_fn(data.train, cfg.batch_size, seed=seed),
      _adam(schedule), tcfg, train_key, schedule=schedule,
      validate=lambda p: orbit_measure.accuracy(functools.partial(eval_jit, p), data.val))
  row = {"model": name, "seed": seed, "step_cap": steps, "best_step": history["best_step"],
         "steps_run": history["last_step"], "val_acc": history["best_score"],
         "val_curve": history["val_curve"], "train_seconds": history["train_seconds"],
         "final_loss": train.final_loss(history),
         "num_params": models.num_params(params["net"]),
         **orbit_measure.measure(functools.partial(eval_jit, params), cfg, data, seed)}
  if isinstance(model.net, encoders.MLP) and cfg.jensen_batches:
    row["jensen"] = audit.jensen_gaps(model.net, params["net"], data.test_in["images"],
                                      data.test_in["labels"], data.group,
                                      batches=cfg.jensen_batches)
  if model.name == "mlp_aug_full":       # the same parameters, averaged over the orbit at test time
    orbit_jit = jax.jit(models.orbit_eval_logits(model, data.group))
    # exactly invariant by construction (as orbit_full's audit shows): accuracies and maps only
    row["orbit_eval"] = orbit_measure.measure(functools.partial(orbit_jit, params), cfg, data,
                                              seed, with_audit=False)
  if model.name == "learned_aug":
    row["learned_width"] = models.learned_width(model, params)
  return row


def describe(row: dict) -> str:
  return (f"in {row['acc_in_support']:.3f} out {row['acc_out_of_support']:.3f} per-example inv "
          f"{row['invariance']['max_error_max']:.2e} flips {row['invariance']['flip_rate']:.3f}, "
          f"best step {row['best_step']} of {row['steps_run']}")


def main(cfg: OrbitConfig):
  # Nothing is written until the data is there (a missing dataset is a one-line error).
  workdir = workdir_lib.Workdir(cfg.workdir, "orbit", config.identity(cfg), create=False)
  data_of = functools.lru_cache(maxsize=None)(lambda seed: orbit_data.load(cfg, seed))
  first = data_of(cfg.seeds[0])
  workdir.create()
  runs = cfg.runs(first.num_classes)
  logging.info("orbit study: %s, %d train / %d val / %d + %d test examples, arms %s, seeds %s",
               cfg.group, len(first.train["labels"]), len(first.val["labels"]),
               len(first.test_in["labels"]), len(first.test_out["labels"]),
               ",".join(a.name for a in cfg.arms()), list(cfg.seeds))
  # One model object per arm: every seed reuses its compiled programs.
  zoo = {arm: models.make(arm.model, arm.spec, first.group, first.support)
         for arm in dict.fromkeys(r.arm for r in runs)}
  rows = runner.run_all(workdir, [
      runner.Run(r.key, lambda r=r: train_and_measure(r, zoo[r.arm], cfg, data_of(r.seed), workdir),
                 describe) for r in runs])
  results = orbit_report.write(workdir, cfg, rows)
  print(workdir.file("results.md"))
  print(orbit_report.markdown(cfg, results))


if __name__ == "__main__":
  cli.run(OrbitConfig, main)
