r"""Orbit study: hard, orbit, augmentation and no invariance side by side, on curated data.

    python -m experiments.orbit --flagfile=experiments/configs/orbit.flags

Translations (default): 8x8 digits placed only in the ``--support`` region (bottom half) of a
``--canvas`` canvas; evaluated on held-out digits placed in the support and in its complement (top
half). Rotations (``--group=rotations``): digits trained upright, evaluated upright and rotated by
a random multiple of 90 degrees, 6 and 9 excluded.

config -> data -> one row per model x seed (train, then audit) -> report (``orbit_report``).
"""
from __future__ import annotations

import dataclasses

from absl import logging
import jax
import numpy as np
import optax

from experiments import cli
from experiments import config
from experiments import orbit_report
from experiments import workdir as workdir_lib
from invariance import audit
from invariance import encoders
from invariance import evaluate
from invariance import groups as groups_lib
from invariance import models
from invariance import train
from invariance.data import curation
from invariance.data import pipeline
from invariance.data import sources

param = config.param


@dataclasses.dataclass(frozen=True)
class OrbitConfig(config.StudyConfig):
  DATA_PARALLEL = ("batch_size",)

  group: str = param("translations", "Symmetry group studied.",
                     choices=("translations", "rotations"))
  models: tuple[str, ...] = param(models.TRANSLATION_MODELS, "Models to compare (see README).",
                                  choices=models.NAMES)
  canvas: int = param(24, "Canvas side for translations (digits are 8x8).", low=8)
  support: str = param("bottom", "Training placement support.",
                       choices=tuple(curation.COMPLEMENT))
  placements_per_image: int = param(8, "Placed copies of each training digit.", low=1)
  steps: int = param(1500, "Training steps per model (see --model_steps).", low=1)
  model_steps: tuple[str, ...] = param((), "Per-model overrides, e.g. orbit_full:400,cnn_gap:600.",
                                       allow_empty=True)
  batch_size: int = param(128, "Global batch size.", low=1)
  learning_rate: float = param(3e-3, "Adam learning rate.", above=0)
  mlp_hidden: tuple[int, ...] = param((128, 128), "MLP hidden widths (also the orbit models').",
                                      low=1, distinct=False)
  cnn_channels: tuple[int, ...] = param((16, 32, 32), "ConvNet channels (cnn_gap, cnn_flat, p4).",
                                        low=1, distinct=False)
  orbit_samples: int = param(8, "k: sampled group elements per example (orbit_sampled).", low=1)
  aug_width_reg: float = param(0.05, "learned_aug: weight of the reward for a wide range.")
  aug_eval_samples: int = param(8, "learned_aug: predictions averaged at evaluation.", low=1)
  eval_elements: int = param(64, "Random group elements (plus identity) for the invariance "
                             "audit; 0 = every element.", low=0)
  eval_examples: int = param(256, "Test examples used for the invariance audit.", low=1)
  jensen_batches: int = param(4, "Test batches (of 32) for the Jensen gap.", low=0)
  data_seed: int = param(0, "Seed of the digit split and placements.", low=0)

  @property
  def order(self) -> int:
    return self.canvas ** 2 if self.group == "translations" else 4

  def validate(self):
    allowed = models.TRANSLATION_MODELS if self.group == "translations" else models.ROTATION_MODELS
    bad = [m for m in self.models if m not in allowed]
    if bad:
      config.fail("models", ",".join(self.models), f"unknown {bad[0]!r} for --group={self.group}; "
                  f"allowed: {', '.join(allowed)}")
    self.steps_of(self.models[0])               # checks --model_steps
    if not self.orbit_samples <= self.order:
      config.fail("orbit_samples", self.orbit_samples,
                  f"allowed: 1..{self.order} (the order of the {self.group} group)")
    if not self.eval_elements <= self.order:
      config.fail("eval_elements", self.eval_elements, f"allowed: 0 (all) .. {self.order}")

  def steps_of(self, model: str) -> int:
    steps = self.steps
    for item in self.model_steps:
      name, _, value = item.partition(":")
      if name not in self.models or not value.isdigit() or int(value) < 1:
        config.fail("model_steps", item,
                    f"allowed: MODEL:STEPS with MODEL in {', '.join(self.models)}")
      steps = int(value) if name == model else steps
    return steps

  def model_spec(self) -> models.ModelSpec:
    return models.ModelSpec(mlp_hidden=self.mlp_hidden, cnn_channels=self.cnn_channels,
                            orbit_samples=self.orbit_samples, canvas=self.canvas,
                            aug_width_reg=self.aug_width_reg,
                            aug_eval_samples=self.aug_eval_samples)


config.define_flags(OrbitConfig)


# -- data -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Data:
  group: groups_lib.Group
  train: dict           # images, labels, elements (translation element of each placement)
  test_in: dict
  test_out: dict
  support: np.ndarray   # group elements of the training support


def make_data(cfg: OrbitConfig) -> Data:
  digits = sources.load_digits(seed=cfg.data_seed)
  rng = np.random.default_rng(cfg.data_seed)
  if cfg.group == "rotations":
    split = lambda x, y, which: dict(zip(("images", "labels"),
                                         curation.rotate_curation(x, y, which, rng)[:2]))
    train_split = split(digits.train_images, digits.train_labels, "upright")
    test_in = split(digits.test_images, digits.test_labels, "upright")
    test_out = split(digits.test_images, digits.test_labels, "all90")
    train_split["elements"] = np.zeros(len(train_split["labels"]), np.int32)
    return Data(groups_lib.Rotations(), train_split, test_in, test_out, np.zeros(1, np.int32))
  canvas, reps = (cfg.canvas, cfg.canvas), cfg.placements_per_image
  splits = curation.curated_splits(np.repeat(digits.train_images, reps, 0),
                                   np.repeat(digits.train_labels, reps, 0),
                                   digits.test_images, digits.test_labels, canvas, cfg.support, rng)
  pos = splits["train"]["positions"]
  train_split = dict(splits["train"], elements=(pos[:, 0] * cfg.canvas + pos[:, 1]).astype(np.int32))
  drop = lambda s: {"images": s["images"], "labels": s["labels"]}
  return Data(groups_lib.Translations(*canvas), train_split, drop(splits["test_in"]),
              drop(splits["test_out"]),
              curation.support_elements(cfg.support, canvas, digits.train_images.shape[1:3]))


# -- one row --------------------------------------------------------------------------------------
def measure(model: models.Model, params, cfg: OrbitConfig, data: Data, seed: int) -> dict:
  eval_fn = jax.jit(lambda x: model.eval_logits(params, x))
  acc = lambda split: float(np.mean(evaluate.batched_apply(eval_fn, split["images"], 256)
                                    .argmax(-1) == split["labels"]))
  elements = audit.eval_elements(data.group, cfg.eval_elements, seed)
  inv = audit.audit(eval_fn, data.test_in["images"][:cfg.eval_examples], data.group, elements)
  row = {"acc_in_support": acc(data.test_in), "acc_out_of_support": acc(data.test_out),
         "invariance_error": inv["batch_error"], "invariance_elements": inv["elements"],
         "invariance": inv}
  if isinstance(model.net, encoders.MLP) and cfg.jensen_batches:
    row["jensen"] = audit.jensen_gaps(model.net, params["net"], data.test_in["images"],
                                      data.test_in["labels"], data.group,
                                      batches=cfg.jensen_batches)
  return row


def run_one(model: models.Model, seed: int, cfg: OrbitConfig, data: Data,
            workdir: workdir_lib.Workdir, optimizer) -> dict:
  name = model.name
  init_key, train_key = jax.random.split(jax.random.key(seed))
  params = jax.jit(model.init)(init_key, data.train["images"][:1])
  tcfg = train.TrainConfig(steps=cfg.steps_of(name), name=f"{name}/seed{seed}",
                           log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                           checkpoint_dir=workdir.checkpoint_dir(name, seed),
                           metrics_path=workdir.metrics_path(name, seed))
  params, history = train.fit(model.loss, params,
                              pipeline.train_batch_fn(data.train, cfg.batch_size, seed=seed),
                              optimizer, tcfg, train_key)
  row = {"model": name, "seed": seed, "steps": tcfg.steps, "train_seconds": history["train_seconds"],
         "final_loss": history["loss"][-1] if history["loss"] else None,
         "num_params": models.num_params(params["net"]),
         **measure(model, params, cfg, data, seed)}
  if name == "learned_aug":
    row["learned_width"] = models.learned_width(model, params)
  logging.info("%s seed %d: in %.3f out %.3f inv %.2e flips %.3f (%.1fs)", name, seed,
               row["acc_in_support"], row["acc_out_of_support"], row["invariance_error"],
               row["invariance"]["flip_rate"], row["train_seconds"])
  return row


def main(cfg: OrbitConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "orbit", config.identity(cfg))
  data = make_data(cfg)
  logging.info("orbit study: %s, %d train / %d + %d test examples, models %s, seeds %s",
               cfg.group, len(data.train["labels"]), len(data.test_in["labels"]),
               len(data.test_out["labels"]), ",".join(cfg.models), list(cfg.seeds))
  # One model and optimizer object per name: every seed reuses their compiled programs.
  spec = cfg.model_spec()
  zoo = {name: models.make(name, spec, data.group, data.support) for name in cfg.models}
  optimizer = optax.adam(cfg.learning_rate)
  rows = [workdir.row(f"{name}_seed{seed}",
                      lambda m=zoo[name], s=seed: run_one(m, s, cfg, data, workdir, optimizer))
          for seed in cfg.seeds for name in cfg.models]
  results = orbit_report.write(workdir, cfg, rows)
  print(workdir.file("results.md"))
  print(orbit_report.markdown(cfg, results))


if __name__ == "__main__":
  cli.run(OrbitConfig, main)
