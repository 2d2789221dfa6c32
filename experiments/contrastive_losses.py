r"""Caption study, third edition: CLIP against a *fair* SigLIP.

    python -m experiments.contrastive_losses --flagfile=experiments/configs/contrastive_losses.flags

The second edition trained SigLIP with CLIP's recipe and the paper's bias init (b = -10, suited to
batches of ~20,000), so "SigLIP learns the light less" could be the recipe. Here each loss gets its
own learning rate, chosen from ``--learning_rates`` by the lowest mean validation loss (the loss
itself, on held-out captioned scenes, at p = 1) over seeds, and SigLIP's bias starts at
``dual_encoder.siglip_bias_for_batch(--batch_size)`` (sigmoid(b) = 1 / B). Every run trains from
the random tower (Adam, warmup + cosine), on scenes without red cars (``contrastive_suppression``'s
``Data``), and is measured like the suppression study's towers (every layer's ridge probes and
sensitivity). The comparison: at each loss's chosen learning rate, the embedding's light probe at
p = 0 and p = 1, and CLIP minus SigLIP paired by seed.
"""
from __future__ import annotations

import dataclasses
import time

from absl import logging
import jax
import numpy as np
import optax

from experiments import cli
from experiments import config
from experiments import contrastive_losses_report as report_lib
from experiments import contrastive_suppression as cs
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import scenes

BIAS_INITS = ("batch", "paper")
VALIDATION_CAPTIONS = 6          # the captions stream of the validation scenes (dashcam.rng)


@dataclasses.dataclass(frozen=True)
class LossesConfig(config.StudyConfig):
  losses: tuple[str, ...] = config.param(("clip", "siglip"), "Losses compared.", choices=de.LOSSES)
  learning_rates: tuple[float, ...] = config.param(
      (3e-4, 1e-3, 3e-3), "Peak Adam learning rates tried per loss (chosen on validation).",
      above=0, sort=True)
  mention_probs: tuple[float, ...] = config.param((0.0, 1.0), "p of the runs; must include 1 (the "
                                                  "selection's).", low=0, high=1, sort=True)
  siglip_bias_init: str = config.param("batch", "SigLIP's initial bias: 'batch' = -log(B - 1), "
                                       "'paper' = -10.", choices=BIAS_INITS)
  embed_dim: int = config.param(8, "Embedding dimension.", low=1)
  lamp_size: int = config.param(2, "Lamp side in pixels.", choices=scenes.LAMP_SIZES)
  steps: int = config.param(400, "Training steps.", low=1)
  warmup_steps: int = config.param(50, "Warmup steps.", low=0)
  batch_size: int = config.param(128, "Batch size.", low=2)
  num_train: int = config.param(20000, "Training scenes (red cars excluded).", low=2)
  num_validation: int = config.param(2048, "Validation scenes (their loss picks the learning "
                                     "rate); a multiple of --batch_size.", low=2)
  num_probe: int = config.param(1000, "Scenes in each probe split.", low=8)
  num_pairs: int = config.param(500, "Counterfactual pairs per attribute.", low=2)

  def validate(self):
    if 1.0 not in self.mention_probs:
      config.fail("mention_probs", ",".join(f"{p:g}" for p in self.mention_probs),
                  "allowed: values that include 1 (the learning rate is chosen at p = 1)")
    if self.num_validation % self.batch_size:
      config.fail("num_validation", self.num_validation,
                  f"allowed: a multiple of --batch_size={self.batch_size}")
    if self.warmup_steps >= self.steps:
      config.fail("warmup_steps", self.warmup_steps, f"allowed: < --steps={self.steps}")
    if self.batch_size > self.num_train:
      config.fail("batch_size", self.batch_size, f"allowed: <= --num_train={self.num_train}")


config.define_flags(LossesConfig)


def run_name(loss: str, lr: float, p: float) -> str:
  return f"{loss}_lr{lr:g}_p{p:g}"


class Study:
  def __init__(self, cfg: LossesConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir = cfg, workdir
    self.tokenizer = captions_lib.Tokenizer()
    bias = (de.siglip_bias_for_batch(cfg.batch_size) if cfg.siglip_bias_init == "batch" else None)
    self.models = {loss: de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, loss,
                                                  siglip_bias=bias),
                                   dashcam.IMAGE_SIZE, self.tokenizer.max_len, cfg.batch_size)
                   for loss in cfg.losses}
    self.val_loss = {loss: jax.jit(lambda p, b, m=m: m.loss_fn(p, b, None)[0])
                     for loss, m in self.models.items()}
    self.schedules = {lr: optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, cfg.steps)
                      for lr in cfg.learning_rates}
    self.optimizers = {lr: optax.adam(s) for lr, s in self.schedules.items()}

  def validation_loss(self, loss: str, params, data: cs.Data, p: float) -> float:
    cfg = self.cfg
    images, attrs = data.scenes(dashcam.VALIDATION, cfg.num_validation, "num_validation")
    caps = captions_lib.make_captions(attrs, "mention", dashcam.rng(data.seed, VALIDATION_CAPTIONS),
                                      p=p, attribute=dashcam.LIGHT)
    tokens = self.tokenizer.encode(caps)
    b = cfg.batch_size
    return float(np.mean([self.val_loss[loss](params, {"images": images[i:i + b],
                                                       "tokens": tokens[i:i + b]})
                          for i in range(0, len(images), b)]))

  def row(self, loss: str, lr: float, p: float, data: cs.Data) -> dict:
    cfg, model, name = self.cfg, self.models[loss], run_name(loss, lr, p)
    tcfg = train.TrainConfig(steps=cfg.steps, name=f"{name}/seed{data.seed}",
                             log_every=cfg.log_every,
                             **{**self.workdir.train_paths(name, data.seed, cfg),
                                "checkpoint_dir": None})
    images = data.scenes(dashcam.TRAIN, cfg.num_train, "num_train")[0]
    params, history = dashcam.fit_dual_encoder(
        model, model.init(dashcam.init_key(data.seed)), images, data.captions(cfg.num_train, p),
        self.tokenizer, cfg.batch_size, data.seed, self.optimizers[lr], tcfg, self.schedules[lr])
    scalars = {k: float(v) for k, v in params["params"].items() if k in ("log_scale", "t_prime",
                                                                        "bias")}
    return {"loss": loss, "lr": lr, "p": p, "seed": data.seed,
            **cs.measure(model, params, data, cfg.num_probe, cfg.num_pairs, mlp=False),
            "zero_shot": cs.zero_shot(model, self.tokenizer, params, data, cfg.num_probe, p > 0),
            "validation_loss": self.validation_loss(loss, params, data, p),
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "scalars": scalars, "train_seconds": history["train_seconds"]}


def main(cfg: LossesConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive_losses", config.identity(cfg))
  study = Study(cfg, workdir)
  total = len(cfg.seeds) * len(cfg.losses) * len(cfg.learning_rates) * len(cfg.mention_probs)
  rows, t0 = [], time.perf_counter()
  for seed in cfg.seeds:
    data = cs.Data(seed, cfg.data_dir, cfg.lamp_size)
    for loss in cfg.losses:
      for lr in cfg.learning_rates:
        for p in cfg.mention_probs:
          row = workdir.row(f"{run_name(loss, lr, p)}_seed{seed}",
                            lambda: study.row(loss, lr, p, data))
          rows.append(row)
          logging.info("[%d/%d] %s seed %d: embedding light %.3f car %.3f, validation loss %.4f "
                       "(%.0fs elapsed)", len(rows), total, run_name(loss, lr, p), seed,
                       row["probe"]["embedding"]["light"], row["probe"]["embedding"]["car_color"],
                       row["validation_loss"], time.perf_counter() - t0)
  markdown = report_lib.publish(workdir, cfg, rows)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(LossesConfig, main)
