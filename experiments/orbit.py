r"""Orbit study: hard, orbit, augmentation and no invariance side by side, on curated data.

    python -m experiments.orbit --flagfile=experiments/configs/orbit.flags

Translations (default): 8x8 digits placed only in the ``--support`` region (bottom half) of a
24x24 canvas; evaluated on held-out digits placed in the support and in ``--eval_support`` (top
half). Rotations (``--group=rotations``): digits trained upright, evaluated upright and rotated by
a random multiple of 90 degrees, 6 and 9 excluded.

One row per model x seed in ``--workdir/results.json``; see README for the table.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import study
from invariance import augment
from invariance import encoders
from invariance import groups as groups_lib
from invariance import metrics
from invariance import orbit
from invariance import train
from invariance.data import curation
from invariance.data import pipeline
from invariance.data import sources

TRANSLATION_MODELS = ("mlp", "mlp_aug_support", "mlp_aug_full", "orbit_full", "orbit_sampled",
                      "cnn_gap", "cnn_flat", "learned_aug")
ROTATION_MODELS = ("mlp", "mlp_aug_full", "orbit_full", "orbit_sampled", "p4", "cnn_flat")
STUDY_GROUPS = ("translations", "rotations")

FLAGS = flags.FLAGS
flags.DEFINE_enum("group", "translations", STUDY_GROUPS, "Symmetry group studied.")
flags.DEFINE_list("models", list(TRANSLATION_MODELS), "Models to compare (see README).")
flags.DEFINE_integer("canvas", 24, "Canvas side for translations (digits are 8x8).")
flags.DEFINE_string("support", "bottom", "Training placement support: bottom, top, left, right.")
flags.DEFINE_integer("placements_per_image", 8, "Placed copies of each training digit.")
flags.DEFINE_integer("steps", 1500, "Training steps per model (see --model_steps).")
flags.DEFINE_list("model_steps", [], "Per-model overrides, e.g. orbit_full:400,cnn_gap:600.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_float("learning_rate", 3e-3, "Adam learning rate.")
flags.DEFINE_list("mlp_hidden", ["128", "128"], "MLP hidden widths (also the orbit models').")
flags.DEFINE_list("cnn_channels", ["16", "32", "32"], "ConvNet channels (cnn_gap, cnn_flat, p4).")
flags.DEFINE_integer("orbit_samples", 8, "k: sampled group elements per example (orbit_sampled).")
flags.DEFINE_float("aug_width_reg", 0.05, "learned_aug: weight of the reward for a wide range.")
flags.DEFINE_integer("aug_eval_samples", 8, "learned_aug: predictions averaged at evaluation.")
flags.DEFINE_integer("eval_elements", 64, "Random group elements (plus identity) for the "
                     "invariance error; 0 = every element.")
flags.DEFINE_integer("eval_examples", 256, "Test examples used for the invariance error.")
flags.DEFINE_integer("jensen_batches", 4, "Test batches (of 32) for the Jensen check.")
flags.DEFINE_integer("data_seed", 0, "Seed of the digit split and placements.")

RESULT_FLAGS = ("group", "models", "canvas", "support", "placements_per_image", "steps",
                "model_steps", "batch_size", "learning_rate", "mlp_hidden", "cnn_channels",
                "orbit_samples", "aug_width_reg", "aug_eval_samples", "eval_elements",
                "eval_examples", "jensen_batches", "data_seed", "seeds", "prng_impl")


# -- config ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
  group: str
  models: tuple
  seeds: tuple
  canvas: int
  support: str
  steps: dict
  batch_size: int
  learning_rate: float
  mlp_hidden: tuple
  cnn_channels: tuple
  orbit_samples: int
  aug_width_reg: float
  aug_eval_samples: int
  eval_elements: int
  eval_examples: int
  jensen_batches: int
  placements_per_image: int
  data_seed: int


def _widths(flag: str) -> tuple:
  """Layer widths: positive integers, repeats allowed."""
  try:
    values = tuple(int(v) for v in FLAGS[flag].value)
  except ValueError:
    values = ()
  if not values or min(values) < 1:
    study.fail(flag, ",".join(FLAGS[flag].value), "allowed: comma-separated positive integers")
  return values


def config_from_flags() -> Config:
  """Validate every flag before any work."""
  allowed = TRANSLATION_MODELS if FLAGS.group == "translations" else ROTATION_MODELS
  models = study.check_choices("models", FLAGS.models, allowed)
  steps = {m: study.check_positive("steps", FLAGS.steps) for m in models}
  for item in FLAGS.model_steps:
    name, _, value = item.partition(":")
    if name not in models or not value.isdigit() or int(value) < 1:
      study.fail("model_steps", item, f"allowed: MODEL:STEPS with MODEL in {', '.join(models)}")
    steps[name] = int(value)
  if FLAGS.group == "translations":
    if FLAGS.support not in curation.COMPLEMENT:
      study.fail("support", FLAGS.support, f"allowed: {', '.join(curation.COMPLEMENT)}")
    if FLAGS.canvas < 8:
      study.fail("canvas", FLAGS.canvas, "allowed: >= 8 (the digits are 8x8)")
  order = FLAGS.canvas ** 2 if FLAGS.group == "translations" else 4
  if not 1 <= FLAGS.orbit_samples <= order:
    study.fail("orbit_samples", FLAGS.orbit_samples,
               f"allowed: 1..{order} (the order of the {FLAGS.group} group)")
  if not 0 <= FLAGS.eval_elements <= order:
    study.fail("eval_elements", FLAGS.eval_elements, f"allowed: 0 (all) .. {order}")
  for name in ("placements_per_image", "aug_eval_samples", "eval_examples"):
    study.check_positive(name, FLAGS[name].value)
  study.check_data_parallel("batch_size")
  study.check_positive("jensen_batches", FLAGS.jensen_batches, 0)
  if not FLAGS.learning_rate > 0:
    study.fail("learning_rate", FLAGS.learning_rate, "allowed: > 0")
  return Config(group=FLAGS.group, models=tuple(models), seeds=tuple(study.parse_seeds()),
                canvas=FLAGS.canvas, support=FLAGS.support, steps=steps,
                batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                mlp_hidden=_widths("mlp_hidden"), cnn_channels=_widths("cnn_channels"),
                orbit_samples=FLAGS.orbit_samples, aug_width_reg=FLAGS.aug_width_reg,
                aug_eval_samples=FLAGS.aug_eval_samples, eval_elements=FLAGS.eval_elements,
                eval_examples=FLAGS.eval_examples, jensen_batches=FLAGS.jensen_batches,
                placements_per_image=FLAGS.placements_per_image, data_seed=FLAGS.data_seed)


# -- data -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Data:
  group: groups_lib.Group
  train: dict           # images, labels, elements (translation element of each placement)
  test_in: dict
  test_out: dict
  support: np.ndarray   # group elements of the training support


def make_data(cfg: Config) -> Data:
  digits = sources.load_digits(seed=cfg.data_seed)
  rng = np.random.default_rng(cfg.data_seed)
  if cfg.group == "rotations":
    train_x, train_y, _ = curation.rotate_curation(digits.train_images, digits.train_labels,
                                                   "upright", rng)
    test_x, test_y, _ = curation.rotate_curation(digits.test_images, digits.test_labels,
                                                 "upright", rng)
    rot_x, rot_y, _ = curation.rotate_curation(digits.test_images, digits.test_labels, "all90", rng)
    zeros = lambda n: np.zeros(n, np.int32)
    return Data(groups_lib.Rotations(), {"images": train_x, "labels": train_y,
                                         "elements": zeros(len(train_y))},
                {"images": test_x, "labels": test_y}, {"images": rot_x, "labels": rot_y},
                np.zeros(1, np.int32))
  canvas = (cfg.canvas, cfg.canvas)
  glyph = digits.train_images.shape[1:3]
  reps = cfg.placements_per_image
  splits = curation.curated_splits(np.repeat(digits.train_images, reps, 0),
                                   np.repeat(digits.train_labels, reps, 0),
                                   digits.test_images, digits.test_labels, canvas, cfg.support, rng)
  to_elements = lambda pos: (pos[:, 0] * cfg.canvas + pos[:, 1]).astype(np.int32)
  train_split = dict(splits["train"], elements=to_elements(splits["train"]["positions"]))
  drop = lambda s: {"images": s["images"], "labels": s["labels"]}
  return Data(groups_lib.Translations(*canvas), train_split, drop(splits["test_in"]),
              drop(splits["test_out"]), curation.support_elements(cfg.support, canvas, glyph))


# -- models ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Model:
  """A network plus how it produces logits in training and at evaluation."""

  net: nn.Module
  train_logits: Callable      # (params, batch, key) -> logits
  eval_logits: Callable       # (params, images) -> logits, deterministic
  extra_params: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "eval_jit", jax.jit(self.eval_logits))


def make_model(name: str, cfg: Config, data: Data) -> Model:
  group = data.group
  mlp = encoders.MLP(cfg.mlp_hidden)
  plain = lambda net: lambda p, x: net.apply(p["net"], x)
  eval_key = jax.random.key(12345)

  if name in ("mlp", "mlp_aug_support", "mlp_aug_full"):
    support = data.support if name == "mlp_aug_support" else None

    def train_logits(p, batch, key):
      x = batch["images"]
      if name != "mlp":
        current = batch["elements"] if support is not None else None
        x, _ = augment.augment(key, x, group, support, current)
      return mlp.apply(p["net"], x)
    return Model(mlp, train_logits, plain(mlp))

  if name in ("orbit_full", "orbit_sampled"):
    if name == "orbit_full":
      fast = isinstance(group, groups_lib.Translations)
      om = orbit.OrbitModel(mlp, group, mode="fast" if fast else "full")
    else:
      om = orbit.OrbitModel(mlp, group, mode="sampled", num_samples=cfg.orbit_samples)
    return Model(mlp, lambda p, batch, key: om.apply(p["net"], batch["images"], key),
                 lambda p, x: om.apply(p["net"], x, eval_key))

  if name in ("cnn_gap", "cnn_flat", "p4"):
    net = {"cnn_gap": encoders.CircularCNN(cfg.cnn_channels),
           "cnn_flat": encoders.FlatCNN(cfg.cnn_channels),
           "p4": encoders.GroupCNN("rotations", cfg.cnn_channels)}[name]
    return Model(net, lambda p, batch, key: net.apply(p["net"], batch["images"]), plain(net))

  if name == "learned_aug":
    half = cfg.canvas / 2

    def width(p):                         # pixels, per generator (dy, dx), in (0, canvas / 2)
      return half * jax.nn.sigmoid(p["aug"]["width_logit"])

    def shifted_logits(p, x, key, k):
      t = augment.learned_shifts(key, width(p), x.shape[0], k)                  # k, N, 2
      xs = jax.vmap(lambda s: augment.fourier_shift(x, s))(t)
      return mlp.apply(p["net"], xs.reshape((-1,) + x.shape[1:])).reshape(k, x.shape[0], -1)

    def train_logits(p, batch, key):
      return shifted_logits(p, batch["images"], key, 1)[0]

    return Model(mlp, train_logits,
                 lambda p, x: shifted_logits(p, x, eval_key, cfg.aug_eval_samples).mean(0),
                 extra_params={"aug": {"width_logit": jnp.full((2,), -2.0)}})
  raise AssertionError(name)


def loss_fn_for(name: str, model: Model, cfg: Config):
  def loss_fn(params, batch, key):
    logits = model.train_logits(params, batch, key)
    loss = train.cross_entropy(logits, batch["labels"])
    aux = {"acc": metrics.accuracy(logits, batch["labels"])}
    if name == "learned_aug":
      w = jax.nn.sigmoid(params["aug"]["width_logit"])        # width as a fraction of half canvas
      loss = loss - cfg.aug_width_reg * jnp.sum(w)
      aux["width_y"], aux["width_x"] = w[0] * cfg.canvas / 2, w[1] * cfg.canvas / 2
    return loss, aux
  return loss_fn


# -- one row --------------------------------------------------------------------------------------
def evaluate(name: str, model: Model, params, cfg: Config, data: Data, seed: int) -> dict:
  eval_fn = lambda x: model.eval_jit(params, x)
  logits = lambda images: study.batched_apply(eval_fn, images, 256)
  acc = lambda split: float(np.mean(logits(split["images"]).argmax(-1) == split["labels"]))
  group = data.group
  if cfg.eval_elements == 0:
    elements = np.arange(group.order)
  else:
    rng = np.random.default_rng(1000 + seed)
    others = rng.choice(np.arange(1, group.order), size=min(cfg.eval_elements, group.order - 1),
                        replace=False)
    elements = np.concatenate([[0], np.sort(others)])
  x_inv = data.test_in["images"][:cfg.eval_examples]
  outs = np.stack([logits(np.asarray(_act(group, g, x_inv))) for g in elements])
  inv = float(np.max(metrics.relative_change(outs, outs[0])))          # elements[0] is identity
  row = {"acc_in_support": acc(data.test_in), "acc_out_of_support": acc(data.test_out),
         "invariance_error": inv, "invariance_elements": int(len(elements))}
  if isinstance(model.net, encoders.MLP) and cfg.jensen_batches:
    row["jensen"] = jensen_check(model.net, params["net"], data, cfg)
  return row


_jensen_gap = jax.jit(orbit.jensen_gap, static_argnums=(0, 4))
_act = jax.jit(lambda group, g, x: group.act(g, x), static_argnums=0)


def jensen_check(net, params, data: Data, cfg: Config) -> dict:
  """loss(orbit model) <= mean loss over augmented copies, on test batches of 32, full orbit."""
  f = lambda x, y: _jensen_gap(net, params, x, y, data.group)
  violations, gaps, batches = 0, [], 0
  for b in range(cfg.jensen_batches):
    x = data.test_in["images"][32 * b:32 * (b + 1)]
    y = data.test_in["labels"][32 * b:32 * (b + 1)]
    if len(y) == 0:
      break
    orbit_loss, aug_loss = (np.asarray(v) for v in f(x, y))
    violations += int(np.sum(orbit_loss > aug_loss + 1e-5))
    gaps.append(float(np.mean(aug_loss - orbit_loss)))
    batches += 1
  return {"batches": batches, "examples": batches * 32, "violations": violations,
          "mean_gap": float(np.mean(gaps)) if gaps else 0.0}


def run_one(name: str, seed: int, cfg: Config, data: Data, workdir: study.Workdir,
            model: Model, loss_fn: Callable, optimizer) -> dict:
  key = jax.random.key(seed)
  init_key, train_key = jax.random.split(key)
  params = {"net": jax.jit(model.net.init)(init_key, data.train["images"][:1]),
            **model.extra_params}
  batch_at = pipeline.train_batch_fn(data.train, cfg.batch_size, seed=seed)
  tcfg = train.TrainConfig(steps=cfg.steps[name], name=f"{name}/seed{seed}",
                           log_every=FLAGS.log_every,
                           checkpoint_dir=workdir.checkpoint_dir(name, seed),
                           checkpoint_every=FLAGS.checkpoint_every)
  start = time.perf_counter()
  params, history = train.fit(loss_fn, params, batch_at, optimizer, tcfg, train_key)
  train_seconds = time.perf_counter() - start
  row = {"model": name, "seed": seed, "steps": cfg.steps[name], "train_seconds": train_seconds,
         "final_loss": history["loss"][-1] if history["loss"] else None,
         **evaluate(name, model, params, cfg, data, seed)}
  if name == "learned_aug":
    w = cfg.canvas / 2 * jax.nn.sigmoid(params["aug"]["width_logit"])
    row["learned_width"] = {"dy": float(w[0]), "dx": float(w[1])}
  logging.info("%s seed %d: in %.3f out %.3f inv %.2e (%.1fs)", name, seed, row["acc_in_support"],
               row["acc_out_of_support"], row["invariance_error"], train_seconds)
  return row


# -- outputs --------------------------------------------------------------------------------------
METRICS = ("acc_in_support", "acc_out_of_support", "invariance_error", "train_seconds")


def jensen_summary(rows) -> dict:
  checks = [r["jensen"] for r in rows if "jensen" in r]
  batches = sum(c["batches"] for c in checks)
  return {"evaluated_batches": batches, "examples": sum(c["examples"] for c in checks),
          "violations": sum(c["violations"] for c in checks),
          "mean_gap": float(np.mean([c["mean_gap"] for c in checks])) if checks else None,
          "models": sorted({r["model"] for r in rows if "jensen" in r})}


def write_results(workdir: study.Workdir, cfg: Config, rows: list) -> dict:
  summary = study.summarize(rows, ["model"], METRICS)
  results = {"study": "orbit", "flags": workdir.flags, "rows": rows, "summary": summary,
             "jensen": jensen_summary(rows)}
  return workdir.publish(results, results_markdown(cfg, results), lambda w: plot(w, cfg, summary))


def results_markdown(cfg: Config, results: dict) -> str:
  table = study.markdown_table(
      ["model", "acc in support", "acc out of support", "gap (pts)", "invariance error", "train s"],
      [[s["model"], study.pm(s, "acc_in_support"), study.pm(s, "acc_out_of_support"),
        f"{100 * (s['acc_in_support_mean'] - s['acc_out_of_support_mean']):.1f}",
        study.pm(s, "invariance_error", "{:.2e}"), f"{s['train_seconds_mean']:.1f}"]
       for s in results["summary"]])
  j = results["jensen"]
  where = (f"trained in the `{cfg.support}` support, tested in and out of it"
           if cfg.group == "translations" else "trained upright, tested upright and rotated")
  widths = [r["learned_width"] for r in results["rows"] if "learned_width" in r]
  width_line = ""
  if widths:
    dy = np.mean([w["dy"] for w in widths])
    dx = np.mean([w["dx"] for w in widths])
    width_line = (f"\n\n`learned_aug` learned shift ranges of ±{dy:.1f} px (rows) and ±{dx:.1f} px "
                  f"(columns), mean over seeds.")
  return (f"# Orbit study ({cfg.group}; {where}; seeds {list(cfg.seeds)})\n\n{table}\n\n"
          f"Jensen check (orbit-model loss <= mean augmented loss, full orbit): "
          f"{j['violations']} violations in {j['examples']} test examples "
          f"({j['evaluated_batches']} batches, models {', '.join(j['models'])}); mean gap "
          f"{j['mean_gap'] if j['mean_gap'] is None else round(j['mean_gap'], 4)}.{width_line}\n\n"
          + reading(results["summary"]) + "\n")


def reading(summary) -> str:
  """A one-paragraph reading generated from the numbers (no claim is hard-coded)."""
  by = {s["model"]: s for s in summary}
  gap = lambda m: 100 * (by[m]["acc_in_support_mean"] - by[m]["acc_out_of_support_mean"])
  parts = []
  for m in ("cnn_gap", "p4", "orbit_full"):
    if m in by:
      parts.append(f"`{m}` loses {gap(m):.1f} points out of support with invariance error "
                   f"{by[m]['invariance_error_mean']:.1e}")
  for m in ("mlp", "cnn_flat", "mlp_aug_support"):
    if m in by:
      parts.append(f"`{m}` loses {gap(m):.1f} points")
  if "mlp_aug_full" in by:
    parts.append(f"full-group augmentation (`mlp_aug_full`) loses {gap('mlp_aug_full'):.1f} points "
                 f"but its invariance error stays at {by['mlp_aug_full']['invariance_error_mean']:.2f}")
  return "Reading: " + "; ".join(parts) + ". Hard and orbit invariance hold exactly wherever the " \
      "data went or not; soft invariance holds only where the data (or augmentation) went."


def plot(workdir: study.Workdir, cfg: Config, summary) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = [s["model"] for s in summary]
  xs = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(9, 3.5))
  for off, metric, label in ((-0.2, "acc_in_support", "in support"),
                             (0.2, "acc_out_of_support", "out of support")):
    ax.bar(xs + off, [s[metric + "_mean"] for s in summary], 0.4,
           yerr=[s[metric + "_sd"] for s in summary], label=label)
  ax.set_xticks(xs, names, rotation=30, ha="right")
  ax.set_ylabel("test accuracy")
  ax.set_ylim(0, 1)
  ax.legend()
  ax.set_title(f"Orbit study ({cfg.group}): accuracy in vs out of the training support")
  study.save_figure(fig, workdir.file("accuracy.png"))
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(9, 3.5))
  ax.bar(xs, [max(s["invariance_error_mean"], 1e-9) for s in summary])
  ax.set_yscale("log")
  ax.set_xticks(xs, names, rotation=30, ha="right")
  ax.set_ylabel("invariance error (relative, worst element)")
  ax.set_title(f"Orbit study ({cfg.group}): invariance error per model")
  study.save_figure(fig, workdir.file("invariance_error.png"))
  plt.close(fig)


def main():
  cfg = config_from_flags()
  workdir = study.Workdir(FLAGS.workdir, "orbit", study.result_flags(RESULT_FLAGS))
  data = make_data(cfg)
  logging.info("orbit study: %s, %d train / %d + %d test examples, models %s, seeds %s",
               cfg.group, len(data.train["labels"]), len(data.test_in["labels"]),
               len(data.test_out["labels"]), ",".join(cfg.models), list(cfg.seeds))
  # One model, loss and optimizer object per name: every seed reuses their compiled programs.
  models = {name: make_model(name, cfg, data) for name in cfg.models}
  losses = {name: loss_fn_for(name, models[name], cfg) for name in cfg.models}
  optimizer = optax.adam(cfg.learning_rate)
  rows = [workdir.row(f"{name}_seed{seed}",
                      lambda n=name, s=seed: run_one(n, s, cfg, data, workdir, models[n], losses[n],
                                                     optimizer))
          for seed in cfg.seeds for name in cfg.models]
  results = write_results(workdir, cfg, rows)
  print(workdir.file("results.md"))
  print(results_markdown(cfg, results))


if __name__ == "__main__":
  study.main_wrapper(main)()
