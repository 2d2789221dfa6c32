r"""Caption-curation study: what does a CLIP / SigLIP image embedding keep of a dashcam scene, and
is what it lacks *suppressed* (present, then removed) or *never learned*?

    python -m experiments.contrastive --flagfile=experiments/configs/contrastive.flags

Dual encoders (``invariance.dual_encoder``) are trained on procedural dashcam scenes whose captions
follow a policy (``--policies``): ``mention`` names the car and mentions ``--attribute`` (the
traffic light) with probability p; ``swap`` names the light and mentions the car with probability
p (is a salient attribute that captions never name kept?). The grid is loss x dim x policy x lamp
size x duplicate-caption scoring x training length x p, times seeds (``ContrastiveConfig.runs``).

Every run row measures, on held-out scenes, for every layer of the image tower (each conv block on
an 8x8 grid and globally pooled, the penultimate layer, the embedding; ``invariance.evaluate.
layer_report``): a ridge probe per attribute with leave-one-out-chosen regularisation, and the
counterfactual sensitivity (distance to the one-attribute flip / distance to an unrelated scene).
The same measurements of the same tower at its initialisation are an ``init`` row (per dim, lamp
size and seed): selectivity = trained - init. Runs whose p is in ``--trace_probs`` are also measured
at ``--probe_steps`` through training (one row per step; training resumes between them), so a rise
then fall (suppression) can be told from never rising. Rows also hold the zero-shot accuracy of the
car colour and of the light from prompts that are not training captions (``dashcam.ZERO_SHOT``),
and ``exposures``: how many captions mentioning the varied attribute the run's batches held
(``pipeline.visits``), the dose of the dose-response. Raw-pixel probes run once per seed and lamp.

Data streams and keys: ``invariance.dashcam``. Results go to ``--workdir``: results.json,
results.md and figures (``experiments.contrastive_report``).
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
from invariance.data import pipeline

LAYERS = ("block1_grid", "block1_pool", "block2_grid", "block2_pool", "block3_grid", "block3_pool",
          "penultimate", "embedding")


def run_name(cfg: ContrastiveConfig, run: dict) -> str:
  """A run's checkpoint / metrics / row name (``dashcam.run_key``; no length suffix for the
  longest ``--steps``)."""
  return dashcam.run_key(run["loss"], run["p"], run["dim"], policy=run["policy"],
                         lamp_size=run["lamp_size"], multi_positive=run["multi_positive"],
                         steps=None if run["steps"] == max(cfg.steps) else run["steps"])


class Study:
  """The rows of one workdir: models (one compile per loss x dim x scoring), data per seed and
  lamp size, measurements."""

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

  def run_row(self, run: dict, data: dashcam.SeedData, init_row: dict) -> dict:
    cfg, seed = self.cfg, data.seed
    model = self.model(run["loss"], run["dim"], run["multi_positive"])
    name, steps = run_name(cfg, run), run["steps"]
    captions = data.captions(cfg.num_train, run["p"], cfg.attribute, policy=run["policy"])
    varied = dashcam.varied(run["policy"], cfg.attribute)
    mentioned = np.array([captions_lib.mentions(c, varied) for c in captions])
    seen = pipeline.visits(cfg.num_train, cfg.batch_size, seed, steps)
    images = data.scenes(dashcam.TRAIN, cfg.num_train)[0]
    trace = {}
    stops = sorted({s for s in cfg.probe_steps if 0 < s < steps} | {steps}) if run["traced"] \
        else [steps]
    params, history = model.init(dashcam.init_key(seed)), None
    for stop in stops:             # training resumes from the previous stop's checkpoint
      trace_key = f"{name}_seed{seed}_step{stop}"
      if stop != steps and self.workdir.has_row(trace_key):    # measured before a restart
        trace[stop] = self.workdir.row(trace_key, None)
        continue
      tcfg = train.TrainConfig(steps=stop, name=f"{name}/seed{seed}", log_every=cfg.log_every,
                               checkpoint_every=cfg.checkpoint_every,
                               **self.workdir.train_paths(name, seed, cfg))
      params, history = dashcam.fit_dual_encoder(
          model, params, images, captions, self.tokenizer, cfg.batch_size, seed,
          self.optimizers[steps], tcfg, self.schedules[steps])
      if run["traced"] and stop in cfg.probe_steps:
        trace[stop] = self.workdir.row(trace_key,
                                       lambda: {"step": stop, **self.measure(model, params, data)})
    t0 = time.perf_counter()
    final = trace.get(steps) or self.measure(model, params, data)
    if run["traced"] and 0 in cfg.probe_steps:
      trace[0] = {"step": 0, **{k: init_row[k] for k in ("probe", "alpha", "sensitivity")}}
    row = {"loss": run["loss"], "mention_prob": run["p"], "embed_dim": run["dim"],
           "policy": run["policy"], "lamp_size": run["lamp_size"],
           "duplicates": "positive" if run["multi_positive"] else "negative", "steps": steps,
           "seed": seed, "varied": varied, "mentions": int(mentioned.sum()),
           "exposures": int(seen[mentioned].sum()), **final,
           "zero_shot": self.zero_shot(model, params, data),
           "trace": {str(s): trace[s] for s in sorted(trace)},
           "final_loss": history["loss"][-1] if history["loss"] else None,
           "train_seconds": history["train_seconds"]}
    row.pop("step", None)
    row["eval_seconds"] = time.perf_counter() - t0
    return row


def main(cfg: ContrastiveConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive", config.identity(cfg))
  study = Study(cfg, workdir)
  runs = cfg.runs()
  total = len(runs) * len(cfg.seeds)
  logging.info("contrastive study: %d runs (losses %s, dims %s, policies %s, lamps %s, "
               "duplicates %s, steps %s, p %s, seeds %s; %d traced per seed)", total,
               ",".join(cfg.losses), list(cfg.embed_dims), list(cfg.policies),
               list(cfg.lamp_sizes), list(cfg.duplicate_captions), list(cfg.steps),
               list(cfg.mention_probs), list(cfg.seeds), sum(r["traced"] for r in runs))
  rows, init_rows, pixel_rows, start = [], [], [], time.perf_counter()
  for seed in cfg.seeds:
    for lamp in cfg.lamp_sizes:
      data = dashcam.SeedData(seed, cfg.data_dir, lamp)
      pixel_rows.append(workdir.row(f"pixels_lamp{lamp}_seed{seed}", lambda: study.pixel_row(data)))
      inits = {}
      for run in (r for r in runs if r["lamp_size"] == lamp):
        loss, dim = run["loss"], run["dim"]
        if dim not in inits:
          inits[dim] = workdir.row(f"init_d{dim}_lamp{lamp}_seed{seed}",
                                   lambda: study.init_row(loss, dim, data))
          init_rows.append(inits[dim])
        t0 = time.perf_counter()
        row = workdir.row(f"{run_name(cfg, run)}_seed{seed}",
                          lambda: study.run_row(run, data, inits[dim]))
        rows.append(row)
        light, car = row["probe"]["embedding"][dashcam.LIGHT], row["probe"]["embedding"]["car_color"]
        logging.info("contrastive [%d/%d] %s seed %d: embedding probe light %.3f (init %.3f), car "
                     "%.3f; zero-shot light %.3f car %.3f; %d exposures (%.0fs; ETA %.0fs)",
                     len(rows), total, run_name(cfg, run), seed, light,
                     inits[dim]["probe"]["embedding"][dashcam.LIGHT], car,
                     np.mean(list(row["zero_shot"][dashcam.LIGHT].values())),
                     np.mean(list(row["zero_shot"]["car_color"].values())), row["exposures"],
                     time.perf_counter() - t0,
                     (time.perf_counter() - start) / len(rows) * (total - len(rows)))
  markdown = contrastive_report.publish(workdir, cfg, rows, init_rows, pixel_rows)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(ContrastiveConfig, main)
