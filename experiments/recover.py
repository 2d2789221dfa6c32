r"""Recovery study: how much post-hoc tuning brings back what caption curation squeezed out.

    python -m experiments.recover --flagfile=experiments/configs/recover.flags

Start, per seed: a CLIP / SigLIP dual encoder trained on dashcam scenes whose captions never
mention the traffic light (p = 0): trained here with the contrastive study's streams, keys and
checkpoint layout (``invariance.dashcam``; ``--workdir/checkpoints/<loss>_p0_d<dim>/<seed>``), or
loaded from a finished contrastive-study workdir (``--pretrained_workdir``). Then, for every n in
``--n_labels`` (the first n scenes of one labelled pool per seed: nested sets) and seed, each
method predicts the light on ``--num_test`` held-out scenes:

  * ``probe``              linear probe on the frozen image embedding;
  * ``probe_penultimate``  ... on the frozen tower's last hidden layer (the projection's input):
    was the light gone before the projection, or only in it?
  * ``finetune``           the pretrained image tower plus a linear light head
    (``dual_encoder.LightClassifier``), trained on the n labels;
  * ``recaption``          contrastive training continued on the same scenes re-captioned so that
    a fraction f (``--recaption_fractions``) of captions mention the light, then a probe;
  * ``scratch``            the same tower and head from random init, trained like ``finetune``.

``car_acc``: a car-colour probe on the representation the light is read from, on the whole
labelled pool (captions name the car, so its labels are free). Rows are keyed per (method[, f], n,
seed) and resumable; results.json, results.md, labels_to_recover.png and loss_curves.png are
written at the end (``experiments.recover_report``).
"""
from __future__ import annotations

import time

from absl import logging
import jax
import optax

from experiments import cli
from experiments import config
from experiments.recover_config import LIGHT, RecoverConfig, pretrained_steps
from experiments import recover_report
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import scenes

def recaption_run(fraction: float) -> str:
  return f"recaption_f{fraction:g}"


def tune_run(method: str, n: int) -> str:
  return f"{method}_n{n}"


class Recovery:
  """The study's models (each compiles once for every seed, n and fraction) and, per seed, what its
  rows share (data, dual encoders, features), computed only when a missing row needs it."""

  def __init__(self, cfg: RecoverConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir, self.tokenizer = cfg, workdir, captions_lib.Tokenizer()
    self.steps = pretrained_steps(cfg)
    self.dual = de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, cfg.loss),
                          dashcam.IMAGE_SIZE, self.tokenizer.max_len)
    self.classifier = de.JittedClassifier(self.dual.model, len(scenes.ATTRIBUTES[LIGHT]),
                                          dashcam.IMAGE_SIZE)
    self.schedules = {
        "pretrain": optax.warmup_cosine_decay_schedule(
            0.0, cfg.pretrain_learning_rate, cfg.pretrain_warmup_steps, cfg.pretrain_steps),
        "recaption": optax.cosine_decay_schedule(cfg.recaption_learning_rate, cfg.recaption_steps),
        "tune": optax.cosine_decay_schedule(cfg.tune_learning_rate, cfg.tune_steps)}
    self.optimizers = {k: optax.adam(s) for k, s in self.schedules.items()}
    self._data, self._probes = None, None    # one seed's scenes and features in memory at a time
    self._params: dict = {}        # (seed, "pretrained" / fraction) -> dual encoder params (numpy)

  def data(self, seed: int) -> dashcam.SeedData:
    if self._data is None or self._data.seed != seed:
      self._data, self._probes = dashcam.SeedData(seed, self.cfg.data_dir), None
    return self._data

  def probes(self, seed: int) -> evaluate.PoolProbes:
    """Probes on the labelled pool, scored on the held-out scenes, of ``seed``."""
    data = self.data(seed)
    if self._probes is None:
      self._probes = evaluate.PoolProbes(data.scenes(dashcam.LABELLED, max(self.cfg.n_labels)),
                                         data.scenes(dashcam.HELD_OUT, self.cfg.num_test),
                                         dashcam.EVAL_BATCH)
    return self._probes

  def train_config(self, run: str, seed: int, steps: int) -> train.TrainConfig:
    return train.TrainConfig(
        steps=steps, name=f"{run}/seed{seed}", log_every=self.cfg.log_every,
        checkpoint_dir=self.workdir.checkpoint_dir(run, seed),
        checkpoint_every=self.cfg.checkpoint_every,
        metrics_path=self.workdir.metrics_path(run, seed))

  def contrastive_row(self, seed: int, which, params, p: float) -> dict:
    """Contrastive training of the p = 0 model (``which="pretrained"``) or, from it, of a recaption
    fraction ``which`` (captions mention the light with probability ``p``)."""
    cfg, kind = self.cfg, "pretrain" if which == "pretrained" else "recaption"
    steps, stream, run = ((cfg.pretrain_steps, dashcam.CAPTIONS, cfg.pretrained_run) if
                          kind == "pretrain" else
                          (cfg.recaption_steps, dashcam.RECAPTIONS, recaption_run(which)))
    captions = self.data(seed).captions(cfg.num_train, p, LIGHT, stream)
    params, history = dashcam.fit_dual_encoder(
        self.dual, params, self.data(seed).scenes(dashcam.TRAIN, cfg.num_train)[0], captions,
        self.tokenizer, cfg.contrastive_batch_size, seed, self.optimizers[kind],
        self.train_config(run, seed, steps), self.schedules[kind])
    self._params[(seed, which)] = jax.device_get(params)
    return {"seed": seed, "steps": steps, "mentions": dashcam.count_mentions(captions, LIGHT),
            "train_seconds": history["train_seconds"],
            "final_loss": history["loss"][-1] if history["loss"] else None}

  def pretrain_row(self, seed: int) -> dict:
    """Pretrain (or find) the p = 0 model; its row says where it came from."""
    if self.cfg.pretrained_workdir:
      return {"seed": seed, "steps": self.steps, "mentions": 0, "train_seconds": 0.0,
              "source": self.cfg.pretrained_dir(seed)}
    init = self.dual.init(dashcam.init_key(seed))
    return {**self.contrastive_row(seed, "pretrained", init, 0.0), "source": "pretrained here"}

  def recaption_row(self, seed: int, f: float) -> dict:
    return {**self.contrastive_row(seed, f, self.params(seed, "pretrained"), f),
            "recaption_fraction": f}

  def params(self, seed: int, which):
    """Dual encoder params: ``"pretrained"`` or a recaption fraction (read from the finished
    checkpoint when this process did not train it; unreadable: one line naming the flag)."""
    if (seed, which) not in self._params:
      cfg, workdir = self.cfg, self.workdir
      if which == "pretrained" and cfg.pretrained_workdir:
        where, flag, value = cfg.pretrained_dir(seed), "pretrained_workdir", cfg.pretrained_workdir
      else:
        run = cfg.pretrained_run if which == "pretrained" else recaption_run(which)
        where, flag, value = workdir.checkpoint_dir(run, seed), "workdir", workdir.path
      step = self.steps if which == "pretrained" else cfg.recaption_steps
      try:
        self._params[(seed, which)] = train.load_params(where, step, self.dual.zeros())
      except ValueError as e:
        config.fail(flag, value, str(e))
    return self._params[(seed, which)]

  def readout(self, seed: int, which, representation: str, n: int, light_acc=None) -> dict:
    """The light from ``representation`` (a probe on the first n pool labels, unless measured
    already) and the car colour (a probe on the whole pool: its labels come with the captions)."""
    probes = self.probes(seed)
    probes.features(which, lambda x: self.dual.image_features(self.params(seed, which), x))
    t0 = time.perf_counter()
    light_acc = probes.probe(which, representation, LIGHT, n) if light_acc is None else light_acc
    return {"n_labels": n, "seed": seed, "representation": representation,
            "light_acc": light_acc, "train_seconds": time.perf_counter() - t0,
            "car_acc": probes.probe(which, representation, "car_color")}

  def tune_row(self, seed: int, method: str, n: int) -> dict:
    """finetune (pretrained tower) or scratch (random tower): tower + head on n labels."""
    tower = (self.params(seed, "pretrained")["params"]["image_tower"] if method == "finetune"
             else None)
    probes, cfg = self.probes(seed), self.cfg
    images, attrs = probes.pool
    params, history = dashcam.fit_classifier(
        self.classifier.loss_fn, self.classifier.init(dashcam.head_key(seed), tower), images[:n],
        attrs[LIGHT][:n], cfg.tune_batch_size, seed, self.optimizers["tune"],
        self.train_config(tune_run(method, n), seed, cfg.tune_steps), self.schedules["tune"])
    probes.features((method, n), lambda x: self.classifier.apply(params, x))
    light = probes.accuracy((method, n), "logits", LIGHT)
    return {**self.readout(seed, (method, n), "penultimate", n, light),
            "steps": self.cfg.tune_steps, "train_seconds": history["train_seconds"],
            "final_loss": history["loss"][-1] if history["loss"] else None}

  def row(self, seed: int, method: str, f, n: int, recaption_runs: dict) -> dict:
    if method in ("probe", "probe_penultimate"):
      rep = "embedding" if method == "probe" else "penultimate"
      got = self.readout(seed, "pretrained", rep, n)
    elif method == "recaption":
      # train_seconds: the recaption run this row's probe reads (shared by every n).
      got = dict(self.readout(seed, f, "embedding", n), recaption_fraction=f,
                 train_seconds=recaption_runs[f]["train_seconds"])
    else:
      got = self.tune_row(seed, method, n)
    return {"method": method, **got}


def main(cfg: RecoverConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "recover", config.identity(cfg), create=False)
  study = Recovery(cfg, workdir)
  if cfg.pretrained_workdir:       # read before this workdir is created: unreadable leaves no trace
    for seed in cfg.seeds:
      study.params(seed, "pretrained")
  workdir.create()
  arms = [(m, None) for m in cfg.methods if m != "recaption"] + [
      ("recaption", f) for f in cfg.fractions]
  total = len(cfg.seeds) * len(cfg.n_labels) * len(arms)
  logging.info("recover study: %d rows (methods %s, fractions %s, n %s, seeds %s), start: %s",
               total, ",".join(cfg.methods), list(cfg.fractions), list(cfg.n_labels),
               list(cfg.seeds), cfg.pretrained_workdir or "pretrained here")
  rows, pretrain, recaption_runs, start = [], [], [], time.perf_counter()
  for seed in cfg.seeds:
    pretrain.append(workdir.row(f"pretrain_seed{seed}", lambda: study.pretrain_row(seed)))
    runs = {f: workdir.row(f"recaption_run_f{f:g}_seed{seed}", lambda: study.recaption_row(seed, f))
            for f in cfg.fractions}
    recaption_runs += runs.values()
    for n in cfg.n_labels:
      for method, f in arms:
        key = f"{recaption_run(f)}_n{n}" if method == "recaption" else tune_run(method, n)
        t0 = time.perf_counter()
        row = workdir.row(f"{key}_seed{seed}", lambda: study.row(seed, method, f, n, runs))
        rows.append(row)
        logging.info("recover [%d/%d] %s seed %d n %d: light %.3f car %.3f (%.1fs; ETA %.0fs)",
                     len(rows), total, recover_report.curve(row), seed, n, row["light_acc"],
                     row["car_acc"], time.perf_counter() - t0,
                     (time.perf_counter() - start) / len(rows) * (total - len(rows)))
  trained = [(cfg.pretrained_run, s) for s in cfg.seeds if not cfg.pretrained_workdir]
  trained += [(recaption_run(f), s) for f in cfg.fractions for s in cfg.seeds]
  trained += [(tune_run(m, n), s) for m in ("finetune", "scratch") if m in cfg.methods
              for n in cfg.n_labels for s in cfg.seeds]
  markdown = recover_report.publish(workdir, cfg, rows, pretrain, recaption_runs, trained)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(RecoverConfig, main)
