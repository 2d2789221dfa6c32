r"""Caption study, third edition: is the light *suppressed* when captions stop mentioning it?

    python -m experiments.contrastive_suppression --flagfile=experiments/configs/contrastive_suppression.flags

The direct test. A start tower that holds the light (``p1``: trained ``--start_steps`` on captions
that always mention it; or ``init``, the random tower, which holds it with 4 and 6 px lamps) is
continued for ``--continue_steps`` on captions that never mention the light (p = 0) and, as its
control, on captions that always do (p = 1): same start, same image batches in the same order
(one batch stream per seed), same optimizer, same step count; the captions differ only by the light
phrase. Suppression is the p = 0 continuation ending below its p = 1 control (the pre-registered
endpoint: ``contrastive_suppression_report``). The continuation's optimizer is a factor: AdamW with
decoupled weight decay (``--weight_decays``) and a learned or fixed temperature
(``invariance.contrastive_optim``).

Confounds out: scenes with a red car are dropped everywhere (training, probes, pairs), so the car
colours (black, blue, white) and the lamp colours (red, green) share no word and no pixel colour
(``captions.disjoint_car_colors``). Every layer gets a ridge probe per attribute; the embedding also
a cross-validated MLP probe (``invariance.mlp_probe``). The counterfactual sensitivity is saved as
its numerator (mean distance to the one-attribute flip) and denominator (to an unrelated scene).
Zero-shot light is reported only for towers whose training captions contained the light's words.

Rows: ``start_<arm>_seed<s>`` (the start tower measured) and ``<arm>_cont_p<p>_seed<s>`` (a
continuation, traced at ``--probe_steps``). Results: ``--workdir``/results.json, results.md.
"""
from __future__ import annotations

import os
import time

from absl import logging
import numpy as np
import optax

from experiments import cli
from experiments import config
from experiments.contrastive_suppression_config import SuppressionConfig, arm_name
from experiments import contrastive_suppression_report as report_lib
from experiments import workdir as workdir_lib
from invariance import contrastive_optim
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import mlp_probe
from invariance import probes
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import pipeline
from invariance.data import scenes
from invariance.data import sources

LAYERS = ("block1_grid", "block1_pool", "block2_grid", "block2_pool", "block3_grid", "block3_pool",
          "penultimate", "embedding")
KEEP_CARS = captions_lib.disjoint_car_colors()        # black, blue, white: no red car anywhere
CONTINUE_STREAM = 1_000        # the continuation's batch order: seed + this (both p alike)
CONTINUE_PS = (0.0, 1.0)


def _kept(attrs: dict, n: int, flag: str, *more: dict) -> np.ndarray:
  ok = np.isin(attrs["car_color"], KEEP_CARS)
  for other in more:
    ok &= np.isin(other["car_color"], KEEP_CARS)
  index = np.flatnonzero(ok)[:n]
  if len(index) < n:
    raise ValueError(f"--{flag}={n}: only {len(index)} scenes without a red car were drawn")
  return index


class Data:
  """One seed's scenes with lamps of ``lamp_size``, red cars dropped (streams of
  ``invariance.dashcam``; enough raw scenes are drawn that ``n`` remain)."""

  def __init__(self, seed: int, data_dir, lamp_size: int):
    self.seed, self.data_dir, self.lamp_size = seed, data_dir, lamp_size
    self._cache: dict = {}

  def scenes(self, stream: int, n: int, flag: str = "num_probe"):
    if (stream, n) not in self._cache:
      images, attrs = dashcam.make_scenes(self.seed, stream, int(n * 1.45) + 64, self.data_dir,
                                          self.lamp_size)
      i = _kept(attrs, n, flag)
      self._cache[(stream, n)] = images[i], {k: v[i] for k, v in attrs.items()}
    return self._cache[(stream, n)]

  def pairs(self, n: int) -> dict:
    if ("pairs", n) not in self._cache:
      out = {}
      for i, attr in enumerate(dashcam.ATTRIBUTES):
        a, b, attrs_a, attrs_b = sources.load_scene_pairs(
            int(n * 2.3) + 64, attr, (self.seed, dashcam.PAIRS, i), size=dashcam.IMAGE_SIZE,
            data_dir=self.data_dir, lamp_size=self.lamp_size)
        j = _kept(attrs_a, n, "num_pairs", attrs_b)
        out[attr] = (a[j], b[j])
      self._cache[("pairs", n)] = out
    return self._cache[("pairs", n)]

  def captions(self, n: int, p: float) -> list[str]:
    return dashcam.make_captions(self.scenes(dashcam.TRAIN, n, "num_train")[1], self.seed, p,
                                 dashcam.LIGHT)


def pair_distances(feats_a: dict, feats_b: dict) -> dict:
  """``{layer: (paired, unrelated)}``: mean distance between the features of each counterfactual
  pair, and between a scene and the next pair's partner (an unrelated scene); their ratio is the
  sensitivity (``evaluate.pair_sensitivity``)."""
  out = {}
  for layer, f_a in feats_a.items():
    f_a = np.asarray(f_a, np.float64).reshape(len(f_a), -1)
    f_b = np.asarray(feats_b[layer], np.float64).reshape(len(f_a), -1)
    out[layer] = (float(np.linalg.norm(f_a - f_b, axis=1).mean()),
                  float(np.linalg.norm(f_a - np.roll(f_b, 1, axis=0), axis=1).mean()))
  return out


def measure(model: de.Jitted, params, data: Data, num_probe: int, num_pairs: int, mlp: bool) -> dict:
  """Every layer's ridge probes and sensitivity (numerator, denominator, ratio) per attribute; with
  ``mlp``, the embedding's MLP probes too."""
  keep = lambda x: {k: v for k, v in model.image_features(params, x).items() if k in LAYERS}
  (x_tr, a_tr), (x_te, a_te) = (data.scenes(k, num_probe)
                                for k in (dashcam.PROBE_TRAIN, dashcam.PROBE_TEST))
  f_tr, f_te = (evaluate.batched_apply(keep, x, dashcam.EVAL_BATCH) for x in (x_tr, x_te))
  out = {"probe": {}, "sens_num": {}, "sens_den": {}, "sensitivity": {}}
  for layer in LAYERS:
    got = probes.ridge_probes(f_tr[layer], a_tr, f_te[layer], a_te)
    out["probe"][layer] = {a: acc for a, (acc, _) in got.items()}
  for attr, (a, b) in data.pairs(num_pairs).items():
    dist = pair_distances(*(evaluate.batched_apply(keep, x, dashcam.EVAL_BATCH) for x in (a, b)))
    for layer, (num, den) in dist.items():
      out["sens_num"].setdefault(layer, {})[attr] = num
      out["sens_den"].setdefault(layer, {})[attr] = den
      out["sensitivity"].setdefault(layer, {})[attr] = num / den if den > 0 else 0.0
  if mlp:
    got = mlp_probe.mlp_probes(f_tr["embedding"], a_tr, f_te["embedding"], a_te, seed=data.seed)
    out["mlp_probe"] = {"embedding": {a: acc for a, (acc, _) in got.items()}}
  return out


def zero_shot(model: de.Jitted, tokenizer, params, data: Data, num_probe: int,
              light_testable: bool) -> dict:
  """Mean accuracy over ``dashcam.ZERO_SHOT``'s prompts: car colour among the kept colours, and
  the light only where its words occurred in the tower's training captions (else None)."""
  images, attrs = data.scenes(dashcam.PROBE_TEST, num_probe)
  emb = evaluate.batched_apply(lambda x: model.embed_image(params, x), images, dashcam.EVAL_BATCH)
  names = {"car_color": [scenes.CAR_COLORS[i] for i in KEEP_CARS],
           dashcam.LIGHT: list(scenes.ATTRIBUTES[dashcam.LIGHT])}
  values = {"car_color": np.array(KEEP_CARS), dashcam.LIGHT: np.arange(2)}
  out = {}
  for attr, templates in dashcam.ZERO_SHOT.items():
    if attr == dashcam.LIGHT and not light_testable:
      out[attr] = None
      continue
    accs = []
    for t in templates:
      text = model.embed_text(params, tokenizer.encode([t.format(value=v) for v in names[attr]]))
      guess = values[attr][np.argmax(emb @ np.asarray(text).T, axis=1)]
      accs.append(float(np.mean(guess == attrs[attr])))
    out[attr] = float(np.mean(accs))
  return out


def _checkpoint_steps(directory: str) -> list[int]:
  """The steps of the checkpoints ``train.fit`` finished in ``directory`` (none: [])."""
  if not os.path.isdir(directory):
    return []
  return [int(d) for d in os.listdir(directory) if d.isdigit()]


class Study:
  """One model (CLIP, ``--embed_dim``), its optimizers, and the measurements of a tower."""

  def __init__(self, cfg: SuppressionConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir = cfg, workdir
    self.tokenizer = captions_lib.Tokenizer()
    self.model = de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, "clip"),
                           dashcam.IMAGE_SIZE, self.tokenizer.max_len, cfg.batch_size)
    sched = lambda steps: optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate,
                                                             cfg.warmup_steps, steps)
    self.start_schedule, self.continue_schedule = sched(cfg.start_steps), sched(cfg.continue_steps)
    self.start_optimizer = contrastive_optim.make_optimizer(self.start_schedule)
    self.optimizers = {(wd, t): contrastive_optim.make_optimizer(self.continue_schedule, wd,
                                                                 t == "fixed")
                       for wd in cfg.weight_decays for t in cfg.temperatures}

  def measure(self, params, data: Data, mlp: bool) -> dict:
    return measure(self.model, params, data, self.cfg.num_probe, self.cfg.num_pairs, mlp)

  def zero_shot(self, params, data: Data, light_testable: bool) -> dict:
    return zero_shot(self.model, self.tokenizer, params, data, self.cfg.num_probe, light_testable)

  def fit(self, params, data: Data, p: float, steps: int, name: str, batch_seed: int,
          optimizer, schedule):
    cfg = self.cfg
    tcfg = train.TrainConfig(
        steps=steps, name=f"{name}/seed{data.seed}", log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every, **self.workdir.train_paths(name, data.seed, cfg))
    images = data.scenes(dashcam.TRAIN, cfg.num_train, "num_train")[0]
    return dashcam.fit_dual_encoder(self.model, params, images, data.captions(cfg.num_train, p),
                                    self.tokenizer, cfg.batch_size, batch_seed, optimizer, tcfg,
                                    schedule)

  def start(self, arm: dict, data: Data):
    """The start tower's params (the random tower, or it trained on p = 1 captions)."""
    params = self.model.init(dashcam.init_key(data.seed))
    if arm["start"] == "init":
      return params
    return self.fit(params, data, 1.0, self.cfg.start_steps, "start_" + arm_name(arm), data.seed,
                    self.start_optimizer, self.start_schedule)[0]

  def start_row(self, arm: dict, data: Data, params) -> dict:
    return {"seed": data.seed, "start": arm["start"], "lamp_size": arm["lamp_size"],
            **self.measure(params, data, mlp=True),
            "zero_shot": self.zero_shot(params, data, arm["start"] == "p1"),
            "log_scale": float(params["params"]["log_scale"])}

  def continuation_row(self, arm: dict, p: float, data: Data, start_params) -> dict:
    cfg, name = self.cfg, arm_name(arm, p)
    params, history, trace = start_params, None, {}
    optimizer = self.optimizers[(arm["weight_decay"], arm["temperature"])]
    directory = self.workdir.checkpoint_dir(name, data.seed)
    for stop in [s for s in cfg.probe_steps if s > 0]:
      key, last = f"{name}_seed{data.seed}_step{stop}", stop == cfg.continue_steps
      if not last and self.workdir.has_row(key):           # measured before a restart
        trace[str(stop)] = self.workdir.row(key, None)
        continue
      if not last and max(_checkpoint_steps(directory), default=0) > stop:
        params = train.load_params(directory, stop, self.model.zeros())   # trained past it
      else:
        params, history = self.fit(params, data, p, stop, name, data.seed + CONTINUE_STREAM,
                                   optimizer, self.continue_schedule)
      trace[str(stop)] = self.workdir.row(
          key, lambda: self.measure(params, data, mlp=last)) if not last else self.measure(
              params, data, mlp=True)
    final = trace[str(cfg.continue_steps)]
    captions = data.captions(cfg.num_train, p)
    mentioned = np.array([captions_lib.mentions(c, dashcam.LIGHT) for c in captions])
    seen = pipeline.visits(cfg.num_train, cfg.batch_size, data.seed + CONTINUE_STREAM,
                                   cfg.continue_steps)
    testable = arm["start"] == "p1" or p > 0
    return {"seed": data.seed, **arm, "p": p, **final,
            "trace": {k: {m: v[m] for m in ("probe", "sens_num", "sens_den", "sensitivity")}
                      for k, v in trace.items()},
            "zero_shot": self.zero_shot(params, data, testable),
            "exposures": int(seen[mentioned].sum()),
            "log_scale": float(params["params"]["log_scale"]),
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "train_seconds": history["train_seconds"]}


def main(cfg: SuppressionConfig):
  workdir = workdir_lib.Workdir(cfg.workdir, "contrastive_suppression", config.identity(cfg))
  study = Study(cfg, workdir)
  arms = cfg.arms()
  total = len(cfg.seeds) * len(arms) * len(CONTINUE_PS)
  logging.info("contrastive_suppression: %d continuations (%d arms x p in {0, 1} x %d seeds)",
               total, len(arms), len(cfg.seeds))
  starts, rows, t0 = [], [], time.perf_counter()
  for seed in cfg.seeds:
    for lamp in cfg.lamp_sizes:
      data = Data(seed, cfg.data_dir, lamp)
      for start in cfg.starts:
        base = dict(start=start, lamp_size=lamp)
        todo = [(a, p) for a in arms if a["start"] == start and a["lamp_size"] == lamp
                for p in CONTINUE_PS]
        params = {}

        def get(base=base, data=data, params=params):    # the start is trained once, if needed
          if "p" not in params:
            params["p"] = study.start(base, data)
          return params["p"]

        starts.append(workdir.row(f"start_{arm_name(base)}_seed{seed}",
                                  lambda: study.start_row(base, data, get())))
        for arm, p in todo:
          row = workdir.row(f"{arm_name(arm, p)}_seed{seed}",
                            lambda: study.continuation_row(arm, p, data, get()))
          rows.append(row)
          logging.info("[%d/%d] %s seed %d: embedding light %.3f (start %.3f), MLP %.3f; "
                       "%.0fs elapsed", len(rows), total, arm_name(arm, p), seed,
                       row["probe"]["embedding"]["light"], starts[-1]["probe"]["embedding"]["light"],
                       row["mlp_probe"]["embedding"]["light"], time.perf_counter() - t0)
  markdown = report_lib.publish(workdir, cfg, rows, starts)
  print(workdir.file("results.md"))
  print(markdown)


if __name__ == "__main__":
  cli.run(SuppressionConfig, main)
