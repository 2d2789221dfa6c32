"""How each row of the recovery study is computed (``Recovery``): the study's models, compiled once
for every seed, n and learning rate, and per seed what its rows share (scenes, towers, features),
made only when a missing row needs it."""
from __future__ import annotations

import time

import jax
import numpy as np
import optax

from experiments import config
from experiments import recover_runs as rr
from experiments import workdir as workdir_lib
from experiments.recover_config import RecoverConfig, pretrained_steps
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import probes as probes_lib
from invariance import recovery
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import scenes

LIGHT = rr.LIGHT
CLASSES = len(scenes.ATTRIBUTES[LIGHT])


class Recovery:
  """The rows of one study run: ``pretrain_row``, ``probe_row``, ``tune_row``, ``recaption_row``."""

  def __init__(self, cfg: RecoverConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir, self.tokenizer = cfg, workdir, captions_lib.Tokenizer()
    self.steps = pretrained_steps(cfg)
    self.dual = de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, cfg.loss),
                          dashcam.IMAGE_SIZE, self.tokenizer.max_len)
    self.classifier = de.JittedClassifier(self.dual.model, CLASSES, dashcam.IMAGE_SIZE)
    # Only the layers this study reads (the tower's spatial grids are large and unused here).
    model = self.dual.model
    self.features = jax.jit(lambda p, x: {k: v for k, v in model.apply(
        p, x, method="image_features").items() if k in rr.READ})
    lr = cfg.recaption_learning_rate
    self.schedules = {
        "pretrain": optax.warmup_cosine_decay_schedule(
            0.0, cfg.pretrain_learning_rate, cfg.pretrain_warmup_steps, cfg.pretrain_steps),
        "recaption": (optax.linear_schedule(0.0, lr, cfg.recaption_warmup_steps)
                      if cfg.recaption_warmup_steps else optax.constant_schedule(lr))}
    self.optimizers = {k: optax.adam(s) for k, s in self.schedules.items()}
    # Trained methods: the peak rate lives in the optimizer state (one compiled step per set of
    # frozen layers for the whole grid).
    relative = optax.cosine_decay_schedule(1.0, cfg.tune_steps)
    for lr in cfg.learning_rates:
      self.schedules[("tune", lr)] = optax.cosine_decay_schedule(lr, cfg.tune_steps)
      for frozen in {rr.TRAINED[m].frozen for m in cfg.trained}:
        adam = recovery.peak_adam(lr, relative)
        self.optimizers[("tune", lr, frozen)] = recovery.freeze(adam, frozen) if frozen else adam
    self.early = cfg.early_stopping()
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

  def tower_features(self, seed: int, tower: str) -> dict:
    return self.probes(seed).features(tower, lambda x: self.features(self.params(seed, tower), x))

  def captions(self, seed: int, p: float, stream: int) -> tuple[list[str], np.ndarray]:
    """The training scenes' captions (and which mention the light) at p from ``stream``."""
    if (p, stream) not in self._captions:
      caps = self.data(seed).captions(self.cfg.num_train, p, LIGHT, stream)
      self._captions[(p, stream)] = caps, np.array([captions_lib.mentions(c, LIGHT) for c in caps])
    return self._captions[(p, stream)]

  # -- towers -------------------------------------------------------------------------------------
  def pretrain_row(self, run: rr.Pretrain) -> dict:
    """Pretrain (or find) the p0 / p1 tower; its row says where it came from."""
    cfg, seed, p = self.cfg, run.seed, rr.TOWER_P[run.tower]
    row = {"seed": seed, "tower": run.tower}
    if cfg.pretrained_workdir:
      return {**row, "steps": self.steps, "mentions": 0 if p == 0 else cfg.num_train,
              "train_seconds": 0.0, "source": cfg.pretrained_dir(seed, p)}
    captions, mentions = self.captions(seed, p, dashcam.CAPTIONS)
    params, history = dashcam.fit_dual_encoder(
        self.dual, self.dual.init(dashcam.init_key(seed)),
        self.data(seed).scenes(dashcam.TRAIN, cfg.num_train)[0], captions, self.tokenizer,
        cfg.contrastive_batch_size, seed, self.optimizers["pretrain"],
        self.train_config(cfg.run_key(p), seed, cfg.pretrain_steps), self.schedules["pretrain"])
    self._params[(seed, run.tower)] = jax.device_get(params)
    return {**row, "steps": cfg.pretrain_steps, "mentions": int(mentions.sum()),
            "train_seconds": history["train_seconds"], "final_loss": train.final_loss(history),
            "source": "pretrained here"}

  def params(self, seed: int, tower: str):
    """Dual encoder params of ``tower`` (p0 / p1: read from the finished checkpoint when this
    process did not train it; unreadable: one line naming the flag)."""
    if (seed, tower) not in self._params:
      cfg = self.cfg
      if tower == "init":
        self._params[(seed, tower)] = jax.device_get(self.dual.init(dashcam.init_key(seed)))
        return self._params[(seed, tower)]
      p = rr.TOWER_P[tower]
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
    feats = probes.features(key, lambda x: self.features(params, x))
    finite({split: feats[split][representation] for split in feats}, f"{key} seed {seed}")
    t0 = time.perf_counter()
    light = probes.probe(key, representation, LIGHT, n)
    return {"seed": seed, "representation": representation, "light_acc": light,
            "car_acc": probes.probe(key, representation, "car_color"),
            "train_seconds": time.perf_counter() - t0}

  def probe_row(self, run: rr.Curve) -> dict:
    probe = rr.PROBES[run.curve]
    return {"method": run.curve, "n_labels": run.n, "tower": probe.tower,
            **self.readout(run.seed, probe.tower, self.params(run.seed, probe.tower),
                           probe.representation, run.n)}

  def accuracy(self, params, images, labels) -> float:
    logits = evaluate.batched_apply(lambda x: self.classifier.apply(params, x)["logits"], images,
                                    dashcam.EVAL_BATCH)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))

  def tune_start(self, seed: int, recipe: rr.Recipe, n_fit: int):
    """The classifier a trained method starts from (numpy params): its tower and a random head,
    or (LP-FT) the linear probe on the tower's frozen penultimate layer over the n_fit labels."""
    params = self.classifier.init(dashcam.head_key(seed),
                                  self.params(seed, recipe.tower)["params"]["image_tower"])
    if recipe.probe_head:
      features = self.tower_features(seed, recipe.tower)["pool"]["penultimate"][:n_fit]
      head = recovery.probe_head(features, self.probes(seed).pool[1][LIGHT][:n_fit], CLASSES)
      params = recovery.with_head(params, head)
    return params

  def tune_row(self, run: rr.Curve) -> dict:
    """One trained method at n: the first n - v labels train and the last v validate (both inside
    n); every learning rate runs under the convergence rule, the start counting as a candidate;
    the learning rate with the best validation accuracy is the row's."""
    cfg, seed, n, probes = self.cfg, run.seed, run.n, self.probes(run.seed)
    recipe, (n_fit, _) = rr.TRAINED[run.curve], cfg.split(run.n)
    (images, attrs), (test_x, test_a) = probes.pool, probes.test
    val_x, val_y = images[n_fit:n], attrs[LIGHT][n_fit:n]
    start = self.tune_start(seed, recipe, n_fit)
    validate = lambda p: self.accuracy(p, val_x, val_y)
    start_val = validate(start)
    grid, kept = [], []
    for lr in cfg.learning_rates:
      params, history = dashcam.fit_classifier(
          self.classifier.loss_fn, start, images[:n_fit], attrs[LIGHT][:n_fit],
          cfg.tune_batch_size, seed, self.optimizers[("tune", lr, recipe.frozen)],
          self.train_config(rr.tune_run(run.curve, n, lr), seed, cfg.tune_steps, False,
                            self.early), self.schedules[("tune", lr)], validate)
      val, best_step = history["best_score"], history["best_step"]
      if start_val > val:                 # the start itself beats every evaluated step
        params, val, best_step = start, start_val, 0
      kept.append(params)
      grid.append({"learning_rate": lr, "val_acc": val, "best_step": best_step,
                   "last_step": history["last_step"], "stopped_early": history["stopped_early"],
                   "light_acc": self.accuracy(params, test_x, test_a[LIGHT]),
                   "final_loss": train.final_loss(history), "train_seconds": history["train_seconds"]})
    best = recovery.select([g["val_acc"] for g in grid])
    params = kept[best]
    t0 = time.perf_counter()
    feats = {split: evaluate.batched_apply(lambda x: self.classifier.apply(params, x)["penultimate"],
                                           x, dashcam.EVAL_BATCH)
             for split, x in (("pool", images), ("test", test_x))}
    finite(feats, f"{run.key} (learning rate {grid[best]['learning_rate']:g})")
    car = probes_lib.linear_probe(feats["pool"], attrs["car_color"], feats["test"],
                                  test_a["car_color"])
    return {"method": run.curve, "n_labels": n, "seed": seed, "representation": "logits",
            "tower": recipe.tower, "n_fit": n_fit, "n_val": n - n_fit,
            **{k: grid[best][k] for k in ("light_acc", "val_acc", "learning_rate", "best_step",
                                          "last_step", "stopped_early", "final_loss")},
            "start_val_acc": start_val, "car_acc": car,
            "train_seconds": sum(g["train_seconds"] for g in grid),
            "eval_seconds": time.perf_counter() - t0, "lr_grid": grid}

  def curve_row(self, run: rr.Curve) -> dict:
    return self.probe_row(run) if run.curve in rr.PROBES else self.tune_row(run)

  def recaption_row(self, run: rr.Recaption) -> dict:
    """The light probe on the embedding after ``run.step`` contrastive steps on re-captioned
    scenes from ``run.start`` (step 0: the start itself); the run resumes from its previous
    step's checkpoint."""
    cfg, seed = self.cfg, run.seed
    captions, mentions = self.captions(seed, run.fraction, dashcam.RECAPTIONS)
    seconds = 0.0
    if run.step == 0:
      key, params = run.start, self.params(seed, run.start)
    else:
      key = (run.start, run.fraction, run.step)
      params, history = dashcam.fit_dual_encoder(
          self.dual, self.params(seed, run.start),
          self.data(seed).scenes(dashcam.TRAIN, cfg.num_train)[0], captions, self.tokenizer,
          cfg.contrastive_batch_size, seed, self.optimizers["recaption"],
          self.train_config(run.run, seed, run.step), self.schedules["recaption"])
      seconds = history["train_seconds"]
    got = self.readout(seed, key, params, "embedding")
    return {"start": run.start, "recaption_fraction": run.fraction, "steps": run.step,
            "seed": seed, "n_labels": max(cfg.n_labels), "light_acc": got["light_acc"],
            "car_acc": got["car_acc"], "captions_seen": run.step * cfg.contrastive_batch_size,
            "light_captions_seen": recovery.mentions_seen(mentions, cfg.contrastive_batch_size,
                                                          seed, run.step),
            "light_captions": int(mentions.sum()), "train_seconds": seconds}


def finite(features: dict, name: str) -> None:
  """Features a probe is about to read must be finite: a run whose loss stayed finite while its
  parameters diverged ends in the same one-line ``FloatingPointError`` as a non-finite loss (the
  CLI's exit 3), not in scikit-learn's error about NaN input."""
  bad = [split for split, x in features.items() if not np.all(np.isfinite(x))]
  if bad:
    raise FloatingPointError(f"{name}: features of {', '.join(bad)} are not finite; training "
                             "diverged (allowed: a smaller learning rate)")
