r"""Recovery study: how much post-hoc tuning brings back what caption curation left out.

    python -m experiments.recover --flagfile=experiments/configs/recover.flags \
        --pretrained_workdir=workdir/contrastive

Towers, per seed: ``p0``, a CLIP / SigLIP dual encoder trained on dashcam scenes whose captions
never mention the traffic light (p = 0); ``p1``, the same recipe with captions that always mention
it (the upper reference); ``init``, the random init both started from (the lower reference). p0
and p1 are trained here with the contrastive study's streams, keys and checkpoint layout
(``invariance.dashcam``; ``--workdir/checkpoints/<loss>_p<p>_d<dim>/<seed>``) or loaded from a
finished contrastive-study workdir (``--pretrained_workdir``).

On the n axis (the first n scenes of one labelled pool per seed: nested label sets), the light is
predicted on ``--num_test`` held-out scenes by

  * ``probe`` / ``probe_penultimate``: a linear probe (C = 1) on the frozen p0 tower's embedding /
    last hidden layer; the references ``p1_probe[_penultimate]`` and ``init_probe[_penultimate]``
    are the same probes on the p1 and init towers (``--references``);
  * ``finetune``: the p0 image tower plus a random linear light head, all trained;
  * ``lpft``: linear probe, then fine-tune (Kumar et al. 2022): the head starts as a logistic
    regression (C = 1) on the frozen p0 penultimate features of the n labels, centred and divided
    by one overall scale (``recovery.probe_head``), then everything trains;
  * ``lastblock``: as finetune, but the first two convolutions stay frozen (the last conv, the
    dense layer and the head train);
  * ``scratch``: the init tower (the one p0 started from) plus the head, trained like finetune.

Trained methods use one rule: every learning rate of ``--learning_rates`` (Adam, cosine decay over
the ``--tune_steps`` cap), validation accuracy on a fixed split of ``--num_val`` scenes (its own
stream, ``recover_config.VALIDATION``) every ``--early_stopping_every`` steps, stop after
``--early_stopping_patience`` evaluations without a gain of 0.005, best parameters kept (the start
counts as a candidate); the learning rate with the best validation accuracy is the row's, and its
test accuracy is reported. Every learning rate's record stays in the row (``lr_grid``). Tuned runs
keep no checkpoints (a killed row reruns; each is seconds); their curves are in ``metrics/``.

Matched-step re-captioning (not on the n axis: it uses caption labels, not n): from each tower of
``--recaption_starts``, contrastive training continues on the same scenes re-captioned so that a
fraction f (``--recaption_fractions``) of captions mention the light, with one schedule (linear
warmup, then a constant learning rate) and the same batches for every start; the light is probed
(embedding, all pool labels) at each of ``--recaption_steps``, read from checkpoints of one run
per start (resumed segment by segment: the same parameters as separate runs of those lengths with
this constant schedule).

``car_acc``: a car-colour probe on the representation the light is read from, on the whole
labelled pool (captions name the car, so its labels are free). Rows are keyed per (curve, n, seed)
or (start, f, step, seed) and resumable; results.json, results.md and the figures are written at
the end (``experiments.recover_report``).
"""
from __future__ import annotations

import time

from absl import logging
import jax
import numpy as np
import optax

from experiments import cli
from experiments import config
from experiments import recover_config as rc
from experiments.recover_config import LIGHT, RecoverConfig, pretrained_steps
from experiments import recover_report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import probes as probes_lib
from invariance import recovery
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import scenes

# Probe curves: (tower, representation). The p0 ones are methods, the others references.
PROBE_CURVES = {"probe": ("p0", "embedding"), "probe_penultimate": ("p0", "penultimate"),
                "p1_probe": ("p1", "embedding"), "p1_probe_penultimate": ("p1", "penultimate"),
                "init_probe": ("init", "embedding"),
                "init_probe_penultimate": ("init", "penultimate")}
TOWER_P = {"p0": 0.0, "p1": 1.0}
READ = ("penultimate", "embedding")          # the tower layers probes read


def reference_curves(cfg: RecoverConfig) -> list[str]:
  return [f"{ref}_probe{suffix}" for ref in cfg.references for suffix in ("", "_penultimate")]


def tune_run(method: str, n: int, lr: float) -> str:
  return f"{method}_n{n}_lr{lr:g}"


def recaption_run(start: str, f: float) -> str:
  return f"recaption_{start}_f{f:g}"


class Recovery:
  """The study's models (each compiles once for every seed, n and learning rate) and, per seed,
  what its rows share (data, towers, features), computed only when a missing row needs it."""

  def __init__(self, cfg: RecoverConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir, self.tokenizer = cfg, workdir, captions_lib.Tokenizer()
    self.steps = pretrained_steps(cfg)
    self.dual = de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, cfg.loss),
                          dashcam.IMAGE_SIZE, self.tokenizer.max_len)
    self.classifier = de.JittedClassifier(self.dual.model, len(scenes.ATTRIBUTES[LIGHT]),
                                          dashcam.IMAGE_SIZE)
    # Only the layers this study reads (the tower's spatial grids are large and unused here).
    model = self.dual.model
    self.features = jax.jit(lambda p, x: {k: v for k, v in model.apply(
        p, x, method="image_features").items() if k in READ})
    lr = cfg.recaption_learning_rate
    self.schedules = {
        "pretrain": optax.warmup_cosine_decay_schedule(
            0.0, cfg.pretrain_learning_rate, cfg.pretrain_warmup_steps, cfg.pretrain_steps),
        "recaption": (optax.linear_schedule(0.0, lr, cfg.recaption_warmup_steps)
                      if cfg.recaption_warmup_steps else optax.constant_schedule(lr))}
    self.optimizers = {k: optax.adam(s) for k, s in self.schedules.items()}
    # Tuned runs: the peak rate lives in the optimizer state (one compiled step for the grid).
    relative = optax.cosine_decay_schedule(1.0, cfg.tune_steps)
    for lr in cfg.learning_rates:
      self.schedules[("tune", lr)] = optax.cosine_decay_schedule(lr, cfg.tune_steps)
      self.optimizers[("tune", lr)] = recovery.peak_adam(lr, relative)
    self.optimizers.update({("lastblock", lr): recovery.freeze(
        self.optimizers[("tune", lr)], recovery.LAST_BLOCK_FROZEN) for lr in cfg.learning_rates})
    self.early = train.EarlyStopping(cfg.early_stopping_every, cfg.early_stopping_patience)
    self._seed, self._data, self._probes, self._captions = None, None, None, {}
    self._params: dict = {}        # (seed, tower) -> dual encoder params (numpy)

  # -- one seed's data ----------------------------------------------------------------------------
  def data(self, seed: int) -> dashcam.SeedData:
    if self._seed != seed:
      self._seed, self._data, self._probes = seed, dashcam.SeedData(seed, self.cfg.data_dir), None
      self._captions = {}
    return self._data

  def probes(self, seed: int) -> evaluate.PoolProbes:
    """Probes on the labelled pool, scored on the held-out scenes, of ``seed``."""
    data = self.data(seed)
    if self._probes is None:
      self._probes = evaluate.PoolProbes(data.scenes(dashcam.LABELLED, max(self.cfg.n_labels)),
                                         data.scenes(dashcam.HELD_OUT, self.cfg.num_test),
                                         dashcam.EVAL_BATCH)
    return self._probes

  def validation(self, seed: int):
    return self.data(seed).scenes(rc.VALIDATION, self.cfg.num_val)

  def captions(self, seed: int, p: float, stream: int) -> tuple[list[str], np.ndarray]:
    """The training scenes' captions (and which mention the light) at p from ``stream``."""
    if (p, stream) not in self._captions:
      caps = self.data(seed).captions(self.cfg.num_train, p, LIGHT, stream)
      self._captions[(p, stream)] = caps, np.array([captions_lib.mentions(c, LIGHT) for c in caps])
    return self._captions[(p, stream)]

  # -- towers -------------------------------------------------------------------------------------
  def pretrain_row(self, seed: int, tower: str) -> dict:
    """Pretrain (or find) the p0 / p1 tower; its row says where it came from."""
    cfg, p = self.cfg, TOWER_P[tower]
    if cfg.pretrained_workdir:
      return {"seed": seed, "tower": tower, "steps": self.steps,
              "mentions": 0 if p == 0 else cfg.num_train, "train_seconds": 0.0,
              "source": cfg.pretrained_dir(seed, p)}
    captions, mentions = self.captions(seed, p, dashcam.CAPTIONS)
    params, history = dashcam.fit_dual_encoder(
        self.dual, self.dual.init(dashcam.init_key(seed)),
        self.data(seed).scenes(dashcam.TRAIN, cfg.num_train)[0], captions, self.tokenizer,
        cfg.contrastive_batch_size, seed, self.optimizers["pretrain"],
        self.train_config(cfg.run_key(p), seed, cfg.pretrain_steps), self.schedules["pretrain"])
    self._params[(seed, tower)] = jax.device_get(params)
    return {"seed": seed, "tower": tower, "steps": cfg.pretrain_steps,
            "mentions": int(mentions.sum()), "train_seconds": history["train_seconds"],
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "source": "pretrained here"}

  def params(self, seed: int, tower: str):
    """Dual encoder params of ``tower`` (p0 / p1: read from the finished checkpoint when this
    process did not train it; unreadable: one line naming the flag)."""
    if (seed, tower) not in self._params:
      cfg = self.cfg
      if tower == "init":
        self._params[(seed, tower)] = jax.device_get(self.dual.init(dashcam.init_key(seed)))
        return self._params[(seed, tower)]
      p = TOWER_P[tower]
      if cfg.pretrained_workdir:
        where, flag, value = cfg.pretrained_dir(seed, p), "pretrained_workdir", cfg.pretrained_workdir
      else:
        where, flag, value = (self.workdir.checkpoint_dir(cfg.run_key(p), seed), "workdir",
                              self.workdir.path)
      try:
        self._params[(seed, tower)] = train.load_params(where, self.steps, self.dual.zeros())
      except ValueError as e:
        config.fail(flag, value, str(e))
    return self._params[(seed, tower)]

  def train_config(self, run: str, seed: int, steps: int, checkpoints: bool = True,
                   early=None) -> train.TrainConfig:
    paths = self.workdir.train_paths(run, seed, self.cfg)
    return train.TrainConfig(
        steps=steps, name=f"{run}/seed{seed}", log_every=self.cfg.log_every,
        checkpoint_every=self.cfg.checkpoint_every, early_stopping=early,
        **{**paths, "checkpoint_dir": paths["checkpoint_dir"] if checkpoints else None})

  # -- rows ---------------------------------------------------------------------------------------
  def readout(self, seed: int, key, params, representation: str, n=None) -> dict:
    """The light from ``representation`` of the dual encoder ``params`` (a probe on the first n
    pool labels; all of them when None) and the car colour (a probe on the whole pool)."""
    probes = self.probes(seed)
    probes.features(key, lambda x: self.features(params, x))
    t0 = time.perf_counter()
    light = probes.probe(key, representation, LIGHT, n)
    return {"seed": seed, "representation": representation, "light_acc": light,
            "car_acc": probes.probe(key, representation, "car_color"),
            "train_seconds": time.perf_counter() - t0}

  def probe_row(self, seed: int, curve: str, n: int) -> dict:
    tower, rep = PROBE_CURVES[curve]
    return {"method": curve, "n_labels": n, "tower": tower,
            **self.readout(seed, tower, self.params(seed, tower), rep, n)}

  def accuracy(self, params, images, labels) -> float:
    logits = evaluate.batched_apply(lambda x: self.classifier.apply(params, x)["logits"], images,
                                    dashcam.EVAL_BATCH)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))

  def tune_start(self, seed: int, method: str, n: int):
    """The classifier a trained method starts from (numpy params)."""
    tower = "init" if method == "scratch" else "p0"
    params = self.classifier.init(dashcam.head_key(seed),
                                  self.params(seed, tower)["params"]["image_tower"])
    if method == "lpft":        # the head: the linear probe on the frozen p0 penultimate layer
      probes = self.probes(seed)
      feats = probes.features("p0", lambda x: self.features(self.params(seed, "p0"), x))
      head = recovery.probe_head(feats["pool"]["penultimate"][:n], probes.pool[1][LIGHT][:n],
                                 len(scenes.ATTRIBUTES[LIGHT]))
      params = recovery.with_head(params, head)
    return params

  def tune_row(self, seed: int, method: str, n: int) -> dict:
    """One trained method at n: every learning rate under the convergence rule; the one with the
    best validation accuracy is the row's."""
    cfg, probes = self.cfg, self.probes(seed)
    (images, attrs), (val_x, val_y) = probes.pool, self.validation(seed)
    val_y, (test_x, test_a) = val_y[LIGHT], probes.test
    start = self.tune_start(seed, method, n)
    start_val = self.accuracy(start, val_x, val_y)
    validate = lambda p: self.accuracy(p, val_x, val_y)
    grid, kept = [], []
    for lr in cfg.learning_rates:
      run = tune_run(method, n, lr)
      opt = self.optimizers[("lastblock" if method == "lastblock" else "tune", lr)]
      params, history = dashcam.fit_classifier(
          self.classifier.loss_fn, start, images[:n], attrs[LIGHT][:n], cfg.tune_batch_size,
          seed, opt, self.train_config(run, seed, cfg.tune_steps, False, self.early),
          self.schedules[("tune", lr)], validate)
      val, best_step = history["best_score"], history["best_step"]
      if start_val > val:                 # the start itself beats every evaluated step
        params, val, best_step = start, start_val, 0
      kept.append(params)
      grid.append({"learning_rate": lr, "val_acc": val, "best_step": best_step,
                   "last_step": history["last_step"], "stopped_early": history["stopped_early"],
                   "light_acc": self.accuracy(params, test_x, test_a[LIGHT]),
                   "final_loss": history["loss"][-1] if history["loss"] else None,
                   "train_seconds": history["train_seconds"]})
    best = recovery.select([g["val_acc"] for g in grid])
    params = kept[best]
    t0 = time.perf_counter()
    feats = {split: evaluate.batched_apply(lambda x: self.classifier.apply(params, x)["penultimate"],
                                           x, dashcam.EVAL_BATCH)
             for split, x in (("pool", images), ("test", test_x))}
    car = probes_lib.linear_probe(feats["pool"], attrs["car_color"], feats["test"],
                                  test_a["car_color"])
    return {"method": method, "n_labels": n, "seed": seed, "representation": "logits",
            **{k: grid[best][k] for k in ("light_acc", "val_acc", "learning_rate", "best_step",
                                          "last_step", "stopped_early", "final_loss")},
            "start_val_acc": start_val, "car_acc": car,
            "train_seconds": sum(g["train_seconds"] for g in grid),
            "eval_seconds": time.perf_counter() - t0, "lr_grid": grid}

  def recaption_row(self, seed: int, start: str, f: float, step: int) -> dict:
    """The light probe on the embedding after ``step`` contrastive steps on re-captioned scenes
    from ``start`` (step 0: the start itself); the run resumes from its previous step's
    checkpoint."""
    cfg = self.cfg
    captions, mentions = self.captions(seed, f, dashcam.RECAPTIONS)
    seconds = 0.0
    if step == 0:
      key, params = start, self.params(seed, start)
    else:
      key = (start, f, step)
      params, history = dashcam.fit_dual_encoder(
          self.dual, self.params(seed, start),
          self.data(seed).scenes(dashcam.TRAIN, cfg.num_train)[0], captions, self.tokenizer,
          cfg.contrastive_batch_size, seed, self.optimizers["recaption"],
          self.train_config(recaption_run(start, f), seed, step), self.schedules["recaption"])
      seconds = history["train_seconds"]
    got = self.readout(seed, key, params, "embedding")
    return {"start": start, "recaption_fraction": f, "steps": step, "seed": seed,
            "n_labels": max(cfg.n_labels), "light_acc": got["light_acc"],
            "car_acc": got["car_acc"], "captions_seen": step * cfg.contrastive_batch_size,
            "light_captions_seen": recovery.mentions_seen(mentions, cfg.contrastive_batch_size,
                                                          seed, step),
            "light_captions": int(mentions.sum()), "train_seconds": seconds}


def main(cfg: RecoverConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "recover", config.identity(cfg), create=False)
  study = Recovery(cfg, workdir)
  towers = ["p0"] + (["p1"] if cfg.uses_p1 else [])
  if cfg.pretrained_workdir:       # read before this workdir is created: unreadable leaves no trace
    for seed in cfg.seeds:
      for tower in towers:
        study.params(seed, tower)
  workdir.create()
  curves = list(cfg.methods) + reference_curves(cfg)
  starts = [(s, f, step) for s in cfg.recaption_starts for f in cfg.recaption_fractions
            for step in (0,) + cfg.recaption_steps]
  total = len(cfg.seeds) * (len(cfg.n_labels) * len(curves) + len(starts))
  logging.info("recover study: %d rows (curves %s, n %s, recaption %s x f %s x steps %s, seeds "
               "%s), towers: %s", total, ",".join(curves), list(cfg.n_labels),
               list(cfg.recaption_starts), list(cfg.recaption_fractions),
               list(cfg.recaption_steps), list(cfg.seeds),
               cfg.pretrained_workdir or "pretrained here")
  rows, pretrain, recaption, start = [], [], [], time.perf_counter()

  def log(row, what):
    done = len(rows) + len(recaption)
    logging.info("recover [%d/%d] %s seed %d: light %.3f car %.3f (ETA %.0fs)", done, total, what,
                 row["seed"], row["light_acc"], row["car_acc"],
                 (time.perf_counter() - start) / done * (total - done))

  for seed in cfg.seeds:
    for tower in towers:
      suffix = "" if tower == "p0" else "_p1"
      pretrain.append(workdir.row(f"pretrain{suffix}_seed{seed}",
                                  lambda: study.pretrain_row(seed, tower)))
    for n in cfg.n_labels:
      for curve in curves:
        compute = ((lambda: study.probe_row(seed, curve, n)) if curve in PROBE_CURVES else
                   (lambda: study.tune_row(seed, curve, n)))
        rows.append(workdir.row(f"{curve}_n{n}_seed{seed}", compute))
        log(rows[-1], f"{curve} n {n}")
    for s, f, step in starts:
      recaption.append(workdir.row(f"{recaption_run(s, f)}_s{step}_seed{seed}",
                                   lambda: study.recaption_row(seed, s, f, step)))
      log(recaption[-1], f"{recaption_run(s, f)} step {step}")
  runs = [(cfg.run_key(TOWER_P[t]), s) for t in towers for s in cfg.seeds
          if not cfg.pretrained_workdir]
  runs += [(recaption_run(s, f), seed) for s in cfg.recaption_starts
           for f in cfg.recaption_fractions for seed in cfg.seeds]
  markdown = recover_report.publish(workdir, cfg, rows, pretrain, recaption, runs)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(RecoverConfig, main)
