r"""Caption-curation study: what does a CLIP / SigLIP image embedding keep of a dashcam scene?

    python -m experiments.contrastive --flagfile=experiments/configs/contrastive.flags

Dual encoders (``invariance.dual_encoder``) are trained on procedural dashcam scenes whose captions
name the car ("a black car in front of me") and mention ``--attribute`` (the traffic light) only
with probability p (the ``mention`` caption policy). For every loss x p x embedding dim x seed a row
measures, on held-out scenes (``invariance.evaluate``):

  * ``probe_acc``               linear probes (per attribute) on the final image embedding;
  * ``probe_acc_conv``          ... on the trained tower's first conv layer (4x4-grid pooled map);
  * ``probe_acc_pooled``        ... on its last conv layer after the global average pool;
  * ``probe_acc_penultimate``   ... on its penultimate dense layer;
  * ``random_init_probe_acc``   ... on the final embedding of the same tower at initialisation
    (``random_init_probe_acc_conv``: its first conv layer); the init is the training run's own
    starting point (the tower's parameters depend on the seed and dim only);
  * ``embedding_invariance``    mean cosine between embeddings of scene pairs that differ only in
    that attribute (same nuisance); ``unpaired_similarity``: the same for unrelated scenes;
  * ``zero_shot_acc``           car colour from text prompts ("a photo of a red car", "ITAP a red
    car"; "photo" is not in the caption vocabulary and maps to <unk>), mean over the prompts.

Raw-pixel probes run once per seed (``pixel_rows``). The p = 1 rows are the "captions mention the
light" control. Data streams and keys: ``invariance.dashcam``. Results go to ``--workdir``:
results.json, results.md, probe_vs_p.png, loss_curves.png (``experiments.contrastive_report``).
"""
from __future__ import annotations

import time

from absl import logging
import numpy as np
import optax

from experiments import cli
from experiments import config
from experiments.contrastive_config import ContrastiveConfig
from experiments import contrastive_report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import probes
from invariance import train
from invariance.data import captions as captions_lib

FEATURES = {"probe_acc": "embedding", "probe_acc_conv": "conv1_grid",
            "probe_acc_pooled": "pooled", "probe_acc_penultimate": "penultimate"}
INIT_FEATURES = {"random_init_probe_acc": "embedding", "random_init_probe_acc_conv": "conv1_grid"}


class Study:
  """The rows of one workdir: models (one compile per loss x dim), data per seed, measurements."""

  def __init__(self, cfg: ContrastiveConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir = cfg, workdir
    self.tokenizer = captions_lib.Tokenizer()
    self.schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup_steps,
                                                       cfg.steps)
    self.optimizer = optax.adam(self.schedule)
    self._models: dict = {}

  def model(self, loss: str, dim: int) -> de.Jitted:
    if (loss, dim) not in self._models:
      net = de.DualEncoder(self.tokenizer.vocab_size, dim, loss)
      self._models[(loss, dim)] = de.Jitted(net, dashcam.IMAGE_SIZE, self.tokenizer.max_len,
                                            self.cfg.batch_size, self.cfg.tiled_threshold)
    return self._models[(loss, dim)]

  def probes(self, model: de.Jitted, params, data: dashcam.SeedData, layers: dict) -> dict:
    n = self.cfg.num_probe
    return evaluate.probe_layers(lambda x: model.image_features(params, x),
                                 data.scenes(dashcam.PROBE_TRAIN, n),
                                 data.scenes(dashcam.PROBE_TEST, n), layers, dashcam.EVAL_BATCH)

  def pixel_row(self, data: dashcam.SeedData) -> dict:
    (x_tr, a_tr), (x_te, a_te) = (data.scenes(k, self.cfg.num_probe)
                                  for k in (dashcam.PROBE_TRAIN, dashcam.PROBE_TEST))
    return {"seed": data.seed, "features": "pixels",
            "probe_acc": probes.probe_all(x_tr, a_tr, x_te, a_te)}

  def init_row(self, loss: str, dim: int, data: dashcam.SeedData) -> dict:
    model = self.model(loss, dim)
    got = self.probes(model, model.init(dashcam.init_key(data.seed)), data, INIT_FEATURES)
    return {"embed_dim": dim, "seed": data.seed, **got}

  def run_row(self, loss: str, p: float, dim: int, data: dashcam.SeedData, init_row: dict) -> dict:
    cfg, seed, model = self.cfg, data.seed, self.model(loss, dim)
    key = dashcam.run_key(loss, p, dim)
    captions = data.captions(cfg.num_train, p, cfg.attribute)
    tcfg = train.TrainConfig(steps=cfg.steps, name=f"{key}/seed{seed}", log_every=cfg.log_every,
                             checkpoint_dir=self.workdir.checkpoint_dir(key, seed),
                             checkpoint_every=cfg.checkpoint_every,
                             metrics_path=self.workdir.metrics_path(key, seed))
    # fit donates its params argument: a fresh init (the random-init probes used their own).
    params, history = dashcam.fit_dual_encoder(
        model, model.init(dashcam.init_key(seed)), data.scenes(dashcam.TRAIN, cfg.num_train)[0],
        captions, self.tokenizer, cfg.batch_size, seed, self.optimizer, tcfg, self.schedule)
    t0 = time.perf_counter()
    embed = lambda x: model.embed_image(params, x)
    inv, unpaired = evaluate.pair_invariance(embed, data.pairs(cfg.num_pairs), dashcam.EVAL_BATCH)
    images, attrs = data.scenes(dashcam.PROBE_TEST, cfg.num_probe)
    prompts = {t: model.embed_text(params, self.tokenizer.encode(dashcam.prompts(t)))
               for t in dashcam.PROMPTS}
    zs = evaluate.zero_shot(evaluate.batched_apply(embed, images, dashcam.EVAL_BATCH), prompts,
                            attrs["car_color"])
    row = {"loss": loss, "mention_prob": p, "embed_dim": dim, "seed": seed, "steps": cfg.steps,
           "mentions": dashcam.count_mentions(captions, cfg.attribute),
           **self.probes(model, params, data, FEATURES),
           **{name: init_row[name] for name in INIT_FEATURES},
           "embedding_invariance": inv, "unpaired_similarity": unpaired,
           "zero_shot_acc": float(np.mean(list(zs.values()))), "zero_shot_acc_by_prompt": zs,
           "final_loss": history["loss"][-1] if history["loss"] else None,
           "train_seconds": history["train_seconds"]}
    row["eval_seconds"] = time.perf_counter() - t0
    return row


def main(cfg: ContrastiveConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive", config.identity(cfg))
  study = Study(cfg, workdir)
  runs = [(loss, dim, p) for loss in cfg.losses for dim in cfg.embed_dims
          for p in cfg.mention_probs]
  total = len(runs) * len(cfg.seeds)
  logging.info("contrastive study: %d runs (losses %s, dims %s, p %s, seeds %s), %d steps each",
               total, ",".join(cfg.losses), list(cfg.embed_dims), list(cfg.mention_probs),
               list(cfg.seeds), cfg.steps)
  rows, pixel_rows, start = [], [], time.perf_counter()
  for seed in cfg.seeds:
    data = dashcam.SeedData(seed, cfg.data_dir)
    pixel_rows.append(workdir.row(f"pixels_seed{seed}", lambda: study.pixel_row(data)))
    for loss, dim, p in runs:
      init_row = workdir.row(f"init_d{dim}_seed{seed}", lambda: study.init_row(loss, dim, data))
      t0 = time.perf_counter()
      row = workdir.row(f"{dashcam.run_key(loss, p, dim)}_seed{seed}",
                        lambda: study.run_row(loss, p, dim, data, init_row))
      rows.append(row)
      logging.info("contrastive [%d/%d] %s seed %d: %s probe %.3f, car %.3f, first conv %s %.3f, "
                   "zero-shot %.3f (%.0fs; ETA %.0fs)", len(rows), total,
                   dashcam.run_key(loss, p, dim), seed, cfg.attribute,
                   row["probe_acc"][cfg.attribute], row["probe_acc"]["car_color"], cfg.attribute,
                   row["probe_acc_conv"][cfg.attribute], row["zero_shot_acc"],
                   time.perf_counter() - t0,
                   (time.perf_counter() - start) / len(rows) * (total - len(rows)))
  markdown = contrastive_report.publish(workdir, cfg, rows, pixel_rows)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(ContrastiveConfig, main)
