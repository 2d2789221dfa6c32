"""How each row of the contrastive study is made: the towers (one compile per loss x dim x
duplicate scoring), training on captioned scenes, and the measurements of every layer.

``Study(cfg, workdir)`` makes three kinds of row (``experiments.contrastive_runs`` names them):
``pixel_row`` (ridge probes on raw pixels, per seed and lamp size), ``init_row`` (the tower at its
initialisation, per dim, lamp size and seed) and ``run_row`` (a trained run: probes and
sensitivities per layer, zero-shot accuracy, exposures, and for traced runs the same at each of
``--probe_steps``, training resuming from the previous stop's checkpoint).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import optax

from experiments import workdir as workdir_lib
from experiments.contrastive_config import ContrastiveConfig
from experiments.contrastive_runs import LAYERS, Run
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import probes
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import pipeline


class Study:
  """The rows of one workdir: models, data per seed and lamp size, measurements."""

  def __init__(self, cfg: ContrastiveConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir = cfg, workdir
    self.tokenizer = captions_lib.Tokenizer()
    # One schedule per training length, and its optimizer (train.fit compiles once per pair).
    self.schedules = {s: optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate,
                                                            cfg.warmup_steps, s)
                      for s in cfg.steps}
    self.optimizers = {s: optax.adam(schedule) for s, schedule in self.schedules.items()}
    self._models: dict = {}
    self._prompts: dict = {}

  def model(self, loss: str, dim: int, multi_positive: bool = False) -> de.Jitted:
    if (loss, dim, multi_positive) not in self._models:
      net = de.DualEncoder(self.tokenizer.vocab_size, dim, loss,
                           dtype=None if self.cfg.dtype == "float32" else np.dtype(self.cfg.dtype))
      self._models[(loss, dim, multi_positive)] = de.Jitted(
          net, dashcam.IMAGE_SIZE, self.tokenizer.max_len, self.cfg.batch_size,
          self.cfg.tiled_threshold, multi_positive)
    return self._models[(loss, dim, multi_positive)]

  def measure(self, model: de.Jitted, params, data: dashcam.SeedData) -> dict:
    """Probes and sensitivities of every layer (``evaluate.layer_report``)."""
    n = self.cfg.num_probe
    return evaluate.layer_report(lambda x: model.image_features(params, x),
                                 data.scenes(dashcam.PROBE_TRAIN, n),
                                 data.scenes(dashcam.PROBE_TEST, n),
                                 data.pairs(self.cfg.num_pairs), LAYERS, dashcam.EVAL_BATCH)

  def zero_shot(self, model: de.Jitted, params, data: dashcam.SeedData) -> dict:
    """``{attribute: {prompt template: accuracy}}`` on the probe test split."""
    images, attrs = data.scenes(dashcam.PROBE_TEST, self.cfg.num_probe)
    emb = evaluate.batched_apply(lambda x: model.embed_image(params, x), images,
                                 dashcam.EVAL_BATCH)
    return {a: evaluate.zero_shot(emb, {t: model.embed_text(params, self.tokens(a, t))
                                        for t in templates}, attrs[a])
            for a, templates in dashcam.ZERO_SHOT.items()}

  def tokens(self, attribute: str, template: str):
    if (attribute, template) not in self._prompts:
      self._prompts[(attribute, template)] = self.tokenizer.encode(
          dashcam.prompts(attribute, template))
    return self._prompts[(attribute, template)]

  def pixel_row(self, data: dashcam.SeedData) -> dict:
    (x_tr, a_tr), (x_te, a_te) = (data.scenes(k, self.cfg.num_probe)
                                  for k in (dashcam.PROBE_TRAIN, dashcam.PROBE_TEST))
    got = probes.ridge_probes(x_tr, a_tr, x_te, a_te)
    return {"seed": data.seed, "lamp_size": data.lamp_size, "features": "pixels",
            "probe": {a: acc for a, (acc, _) in got.items()}}

  def init_row(self, loss: str, dim: int, data: dashcam.SeedData) -> dict:
    """The tower at initialisation (the training runs' starting point: ``init_key(seed)``; the
    towers do not depend on the loss)."""
    model = self.model(loss, dim)
    params = model.init(dashcam.init_key(data.seed))
    return {"embed_dim": dim, "lamp_size": data.lamp_size, "seed": data.seed,
            **self.measure(model, params, data), "zero_shot": self.zero_shot(model, params, data)}

  def run_row(self, run: Run, data: dashcam.SeedData, init_row: Callable[[], dict]) -> dict:
    """A trained run's row; ``init_row()`` gives its tower's init row (step 0 of a trace)."""
    cfg, seed, steps = self.cfg, run.seed, run.steps
    model = self.model(run.loss, run.dim, run.multi_positive)
    captions = data.captions(cfg.num_train, run.p, cfg.attribute, policy=run.policy)
    varied = dashcam.varied(run.policy, cfg.attribute)
    mentioned = np.array([captions_lib.mentions(c, varied) for c in captions])
    seen = pipeline.visits(cfg.num_train, cfg.batch_size, seed, steps)
    images = data.scenes(dashcam.TRAIN, cfg.num_train)[0]
    trace = {}
    stops = sorted({s for s in cfg.probe_steps if 0 < s < steps} | {steps}) if run.traced \
        else [steps]
    params, history = model.init(dashcam.init_key(seed)), None
    for stop in stops:             # training resumes from the previous stop's checkpoint
      if stop != steps and self.workdir.has_row(run.trace_key(stop)):  # measured before a restart
        trace[stop] = self.workdir.row(run.trace_key(stop), None)
        continue
      tcfg = train.TrainConfig(steps=stop, name=f"{run.name}/seed{seed}", log_every=cfg.log_every,
                               checkpoint_every=cfg.checkpoint_every,
                               **self.workdir.train_paths(run.name, seed, cfg))
      params, history = dashcam.fit_dual_encoder(
          model, params, images, captions, self.tokenizer, cfg.batch_size, seed,
          self.optimizers[steps], tcfg, self.schedules[steps])
      if run.traced and stop in cfg.probe_steps:
        trace[stop] = self.workdir.row(run.trace_key(stop),
                                       lambda: {"step": stop, **self.measure(model, params, data)})
    t0 = time.perf_counter()
    final = trace.get(steps) or self.measure(model, params, data)
    if run.traced and 0 in cfg.probe_steps:
      trace[0] = {"step": 0, **{k: init_row()[k] for k in ("probe", "alpha", "sensitivity")}}
    row = {"loss": run.loss, "mention_prob": run.p, "embed_dim": run.dim, "policy": run.policy,
           "lamp_size": run.lamp_size, "duplicates": run.duplicates, "steps": steps,
           "seed": seed, "varied": varied, "mentions": int(mentioned.sum()),
           "exposures": int(seen[mentioned].sum()), **final,
           "zero_shot": self.zero_shot(model, params, data),
           "trace": {str(s): trace[s] for s in sorted(trace)},
           "final_loss": train.final_loss(history), "train_seconds": history["train_seconds"]}
    row.pop("step", None)
    row["eval_seconds"] = time.perf_counter() - t0
    return row
