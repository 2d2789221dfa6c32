r"""CLIP against a fair SigLIP: each loss at its own learning rate, SigLIP's bias set for the batch.

    python -m experiments.contrastive_losses --flagfile=experiments/configs/contrastive_losses.flags

SigLIP's bias starts at ``dual_encoder.siglip_bias_for_batch(--batch_size)`` (sigmoid(b) = 1 / B;
the paper's b = -10 suits batches of ~20,000), and each loss gets the learning rate of its lowest
mean validation loss (the loss itself on held-out captioned scenes at p = 1) on
``--selection_seeds``; a rate at which a seed's loss went non-finite is recorded as diverged and
cannot be chosen. Then each loss trains at its chosen rate on ``--seeds``. Every run trains from
the random tower (Adam, warmup + cosine) on scenes without red cars and is measured like the
suppression study's towers (``experiments.caption_towers``). The comparison: the embedding's light
probe, CLIP minus SigLIP paired by seed (``contrastive_losses_report``).
"""
from __future__ import annotations

import jax
import numpy as np
import optax

from experiments import caption_towers as towers
from experiments import cli
from experiments import config
from experiments import contrastive_losses_report as report_lib
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.contrastive_losses_config import LossesConfig, LossRun
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import train
from invariance.data import captions as captions_lib

VALIDATION_CAPTIONS = 6          # the captions stream of the validation scenes (dashcam.rng)


class Study:
  """The towers (one per loss), optimizers per rate, and how one run's row is made."""

  def __init__(self, cfg: LossesConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir = cfg, workdir
    self.tokenizer = captions_lib.Tokenizer()
    bias = de.siglip_bias_for_batch(cfg.batch_size) if cfg.siglip_bias_init == "batch" else None
    self.models = {loss: de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, loss,
                                                  siglip_bias=bias),
                                   dashcam.IMAGE_SIZE, self.tokenizer.max_len, cfg.batch_size)
                   for loss in cfg.losses}
    self.val_loss = {loss: jax.jit(lambda p, b, m=m: m.loss_fn(p, b, None)[0])
                     for loss, m in self.models.items()}
    self._data: towers.Data | None = None

  def data_of(self, seed: int) -> towers.Data:
    """One seed's data at a time (the runs come ordered by seed)."""
    if self._data is None or self._data.seed != seed:
      self._data = towers.Data(seed, self.cfg.data_dir, self.cfg.lamp_size)
    return self._data

  def validation_loss(self, loss: str, params, data: towers.Data, p: float) -> float:
    cfg = self.cfg
    images, attrs = data.scenes(dashcam.VALIDATION, cfg.num_validation, "num_validation")
    caps = captions_lib.make_captions(attrs, "mention", dashcam.rng(data.seed, VALIDATION_CAPTIONS),
                                      p=p, attribute=dashcam.LIGHT)
    tokens, b = self.tokenizer.encode(caps), cfg.batch_size
    return float(np.mean([self.val_loss[loss](params, {"images": images[i:i + b],
                                                       "tokens": tokens[i:i + b]})
                          for i in range(0, len(images), b)]))

  def row(self, run: LossRun) -> dict:
    cfg, model, data = self.cfg, self.models[run.loss], self.data_of(run.seed)
    schedule = optax.warmup_cosine_decay_schedule(0.0, run.lr, cfg.warmup_steps, cfg.steps)
    tcfg = train.TrainConfig(steps=cfg.steps, name=f"{run.name}/seed{run.seed}",
                             log_every=cfg.log_every,
                             **{**self.workdir.train_paths(run.name, run.seed, cfg),
                                "checkpoint_dir": None})
    images = data.scenes(dashcam.TRAIN, cfg.num_train, "num_train")[0]
    head = {"loss": run.loss, "lr": run.lr, "p": run.p, "seed": run.seed}
    try:
      params, history = dashcam.fit_dual_encoder(
          model, model.init(dashcam.init_key(run.seed)), images,
          data.captions(cfg.num_train, run.p), self.tokenizer, cfg.batch_size, run.seed,
          optax.adam(schedule), tcfg, schedule)
    except FloatingPointError as e:         # a rate too large for this loss: recorded, not chosen
      return {**head, "diverged": str(e), "validation_loss": None}
    scalars = {k: float(v) for k, v in params["params"].items()
               if k in ("log_scale", "t_prime", "bias")}
    return {**head, "diverged": None,
            **towers.measure(model, params, data, cfg.num_probe, cfg.num_pairs, mlp=False),
            "zero_shot": towers.zero_shot(model, self.tokenizer, params, data, cfg.num_probe,
                                          run.p > 0),
            "validation_loss": self.validation_loss(run.loss, params, data, run.p),
            "final_loss": train.final_loss(history), "scalars": scalars,
            "train_seconds": history["train_seconds"]}

  def run(self, run: LossRun) -> runner.Run:
    return runner.Run(run.key, lambda: self.row(run), report_lib.describe)


def main(cfg: LossesConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive_losses", config.identity(cfg))
  study = Study(cfg, workdir)
  selection = cfg.selection_runs()
  rows = runner.run_all(workdir, [study.run(r) for r in selection])
  chosen = report_lib.chosen_rates(rows)
  done = {r.key for r in selection}
  comparison = [r for r in cfg.comparison_runs(chosen) if r.key not in done]
  rows += runner.run_all(workdir, [study.run(r) for r in comparison])
  markdown = report_lib.publish(workdir, cfg, rows)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(LossesConfig, main)
