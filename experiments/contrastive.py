r"""Caption-curation study: what does a CLIP / SigLIP image embedding keep of a dashcam scene?

    python -m experiments.contrastive --flagfile=experiments/configs/contrastive.flags

Dual encoders (``invariance.dual_encoder``) are trained on procedural dashcam scenes whose captions
name the car ("a black car in front of me") and mention ``--attribute`` (the traffic light) only
with probability p (the ``mention`` caption policy). For every loss x p x embedding dim x seed a row
measures, on held-out scenes:

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
light" control. Results go to ``--workdir``: results.json, results.md, probe_vs_p.png.
"""
from __future__ import annotations

import dataclasses
import functools
import time

from absl import flags
from absl import logging
import jax
import numpy as np
import optax

from experiments import study
from invariance import dual_encoder as de
from invariance import metrics
from invariance import probes
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import pipeline
from invariance.data import scenes

ATTRIBUTES = tuple(scenes.ATTRIBUTES)                 # car_color, light, pedestrian, clouds
PROMPTS = ("a photo of a {color} car", "ITAP a {color} car")
FEATURES = {"probe_acc": "embedding", "probe_acc_conv": "conv1_grid",
            "probe_acc_pooled": "pooled", "probe_acc_penultimate": "penultimate"}
IMAGE_SIZE = 32

FLAGS = flags.FLAGS
flags.DEFINE_list("losses", ["clip"], "Contrastive losses: clip, siglip.")
flags.DEFINE_list("mention_probs", ["0", "0.001", "0.01", "1"],
                  "p: probability that a training caption mentions --attribute.")
flags.DEFINE_list("embed_dims", ["8"], "Embedding dimensions.")
flags.DEFINE_string("attribute", "light", "The attribute captions mention with probability p.")
flags.DEFINE_integer("steps", 400, "Training steps per run.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak Adam learning rate (linear warmup, cosine decay).")
flags.DEFINE_integer("warmup_steps", 50, "Learning-rate warmup steps.")
flags.DEFINE_integer("num_train", 20000, "Training scenes (captioned once per seed and p).")
flags.DEFINE_integer("num_probe", 1000, "Held-out scenes in each probe split (train and test).")
flags.DEFINE_integer("num_pairs", 500, "Scene pairs per attribute for embedding invariance.")

RESULT_FLAGS = ("losses", "mention_probs", "embed_dims", "attribute", "steps", "batch_size",
                "learning_rate", "warmup_steps", "num_train", "num_probe", "num_pairs", "seeds",
                "prng_impl")


# -- config ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
  losses: tuple
  mention_probs: tuple
  embed_dims: tuple
  attribute: str
  seeds: tuple
  steps: int
  batch_size: int
  learning_rate: float
  warmup_steps: int
  num_train: int
  num_probe: int
  num_pairs: int


def _probabilities() -> tuple:
  return tuple(sorted(study.number_list("mention_probs", float, 0.0, 1.0)))


def _dims() -> tuple:
  return study.number_list("embed_dims", int, 1)


def config_from_flags() -> Config:
  """Validate every flag before any work."""
  losses = tuple(study.check_choices("losses", FLAGS.losses, de.LOSSES))
  if len(set(losses)) != len(losses):
    study.fail("losses", ",".join(losses), "allowed: distinct losses")
  probs, dims = _probabilities(), _dims()
  if FLAGS.attribute not in captions_lib.MENTIONABLE:
    study.fail("attribute", FLAGS.attribute,
               f"unknown; allowed: {', '.join(captions_lib.MENTIONABLE)}")
  for name in ("steps", "batch_size", "num_train", "num_pairs"):
    study.check_positive(name, FLAGS[name].value)
  study.check_positive("num_probe", FLAGS.num_probe, 8)
  study.check_positive("warmup_steps", FLAGS.warmup_steps, 0)
  if FLAGS.warmup_steps >= FLAGS.steps:
    study.fail("warmup_steps", FLAGS.warmup_steps, f"allowed: < --steps={FLAGS.steps}")
  if FLAGS.batch_size > FLAGS.num_train:
    study.fail("batch_size", FLAGS.batch_size, f"allowed: <= --num_train={FLAGS.num_train}")
  study.check_data_parallel("batch_size")
  if not FLAGS.learning_rate > 0:
    study.fail("learning_rate", FLAGS.learning_rate, "allowed: > 0")
  return Config(losses=losses, mention_probs=probs, embed_dims=dims, attribute=FLAGS.attribute,
                seeds=tuple(study.parse_seeds()), steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
                num_train=FLAGS.num_train, num_probe=FLAGS.num_probe, num_pairs=FLAGS.num_pairs)


def run_key(loss: str, p: float, dim: int) -> str:
  return f"{loss}_p{p:g}_d{dim}"


# -- data (per seed; rendered lazily, only if some row of the seed is missing) --------------------
class SeedData:
  """Training scenes, probe splits and scene pairs of one seed; captions per p.

  Every split has its own numpy stream (``[seed, k]``). Captions are drawn from one stream for all
  p: the template and the mention coin of each scene are the same for every p, so the scenes that
  mention the attribute at a smaller p also mention it at every larger p (nested curation).
  """

  def __init__(self, seed: int, cfg: Config):
    self.seed, self.cfg = seed, cfg
    self.tokenizer = captions_lib.Tokenizer()

  @functools.cached_property
  def train(self):
    images, attrs, _ = scenes.make_scenes(self.cfg.num_train, np.random.default_rng([self.seed, 0]),
                                          IMAGE_SIZE)
    return images, attrs

  @functools.cached_property
  def probe_train(self):
    return scenes.make_scenes(self.cfg.num_probe, np.random.default_rng([self.seed, 1]),
                              IMAGE_SIZE)[:2]

  @functools.cached_property
  def probe_test(self):
    return scenes.make_scenes(self.cfg.num_probe, np.random.default_rng([self.seed, 2]),
                              IMAGE_SIZE)[:2]

  @functools.cached_property
  def pairs(self) -> dict:
    out = {}
    for i, attr in enumerate(ATTRIBUTES):
      a, b, *_ = scenes.scene_pairs(self.cfg.num_pairs, attr,
                                    np.random.default_rng([self.seed, 3, i]), IMAGE_SIZE)
      out[attr] = (a, b)
    return out

  def captions(self, p: float) -> list[str]:
    return captions_lib.make_captions(self.train[1], "mention", np.random.default_rng([self.seed, 4]),
                                      p=p, attribute=self.cfg.attribute)

  def tokens(self, captions: list[str]) -> np.ndarray:
    return self.tokenizer.encode(captions)


# -- models and jitted evaluation (one compile per loss x dim) ------------------------------------
class Model:
  def __init__(self, loss: str, dim: int, vocab_size: int, max_len: int):
    self.net = de.DualEncoder(vocab_size, dim, loss)
    self.init = jax.jit(self.net.init)
    self.example = de.example_inputs(IMAGE_SIZE, max_len)
    self.features = jax.jit(lambda p, x: self.net.apply(p, x, method="image_features"))
    self.embed_text = jax.jit(lambda p, t: self.net.apply(p, t, method="embed_text"))
    self.loss_fn = de.make_loss_fn(self.net)

  def init_params(self, seed: int):
    return self.init(jax.random.key(seed), *self.example)


_MODELS: dict = {}


def model_for(loss: str, dim: int, tokenizer: captions_lib.Tokenizer) -> Model:
  key = (loss, dim)
  if key not in _MODELS:
    _MODELS[key] = Model(loss, dim, tokenizer.vocab_size, tokenizer.max_len)
  return _MODELS[key]


def features(model: Model, params, images) -> dict:
  return study.batched_apply(lambda x: model.features(params, x), images, 500)


# -- measurements ---------------------------------------------------------------------------------
def probe_features(model: Model, params, data: SeedData, names: dict) -> dict:
  """``{row field: {attribute: acc}}`` for each (field, feature name) in ``names``."""
  (x_tr, a_tr), (x_te, a_te) = data.probe_train, data.probe_test
  f_tr, f_te = features(model, params, x_tr), features(model, params, x_te)
  return {field: probes.probe_all(f_tr[name], a_tr, f_te[name], a_te)
          for field, name in names.items()}


def invariance(model: Model, params, data: SeedData) -> tuple[dict, float]:
  per_attr = {}
  for attr, (a, b) in data.pairs.items():
    emb_a = features(model, params, a)["embedding"]
    emb_b = features(model, params, b)["embedding"]
    per_attr[attr] = float(metrics.embedding_invariance(emb_a, emb_b))
    if attr == ATTRIBUTES[0]:
      unpaired = float(metrics.embedding_invariance(emb_a, np.roll(emb_b, 1, axis=0)))
  return per_attr, unpaired


def zero_shot(model: Model, params, data: SeedData) -> dict:
  """Car-colour accuracy on the probe test split, per prompt template: argmax of similarity."""
  images, attrs = data.probe_test
  img = features(model, params, images)["embedding"]
  out = {}
  for template in PROMPTS:
    prompts = [template.format(color=c) for c in scenes.CAR_COLORS]
    txt = np.asarray(model.embed_text(params, data.tokens(prompts)))
    out[template] = float(np.mean(np.argmax(img @ txt.T, axis=1) == attrs["car_color"]))
  return out


def random_init_row(loss: str, dim: int, seed: int, data: SeedData) -> dict:
  model = model_for(loss, dim, data.tokenizer)
  got = probe_features(model, model.init_params(seed), data,
                       {"random_init_probe_acc": "embedding",
                        "random_init_probe_acc_conv": "conv1_grid"})
  return {"embed_dim": dim, "seed": seed, **got}


def pixel_row(seed: int, data: SeedData) -> dict:
  (x_tr, a_tr), (x_te, a_te) = data.probe_train, data.probe_test
  return {"seed": seed, "features": "pixels", "probe_acc": probes.probe_all(x_tr, a_tr, x_te, a_te)}


def run_one(loss: str, p: float, dim: int, seed: int, cfg: Config, data: SeedData,
            workdir: study.Workdir, init_row: dict) -> dict:
  model = model_for(loss, dim, data.tokenizer)
  captions = data.captions(p)
  train_arrays = {"images": data.train[0], "tokens": data.tokens(captions)}
  batch_at = pipeline.train_batch_fn(train_arrays, cfg.batch_size, seed=seed)
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup_steps,
                                                cfg.steps)
  key = run_key(loss, p, dim)
  tcfg = train.TrainConfig(steps=cfg.steps, name=f"{key}/seed{seed}", log_every=FLAGS.log_every,
                           checkpoint_dir=workdir.checkpoint_dir(key, seed),
                           checkpoint_every=FLAGS.checkpoint_every)
  # fit donates its params argument: pass a fresh init (the row's random-init probes use their own).
  params, history = train.fit(model.loss_fn, model.init_params(seed), batch_at,
                              optax.adam(schedule), tcfg, jax.random.key(seed + 10_000))
  t0 = time.perf_counter()
  inv, unpaired = invariance(model, params, data)
  zs = zero_shot(model, params, data)
  row = {"loss": loss, "mention_prob": p, "embed_dim": dim, "seed": seed, "steps": cfg.steps,
         "mentions": int(sum(captions_lib.mentions(c, cfg.attribute) for c in captions)),
         **probe_features(model, params, data, FEATURES),
         "random_init_probe_acc": init_row["random_init_probe_acc"],
         "random_init_probe_acc_conv": init_row["random_init_probe_acc_conv"],
         "embedding_invariance": inv, "unpaired_similarity": unpaired,
         "zero_shot_acc": float(np.mean(list(zs.values()))), "zero_shot_acc_by_prompt": zs,
         "final_loss": history["loss"][-1] if history["loss"] else None,
         "train_seconds": history["seconds"]}
  row["eval_seconds"] = time.perf_counter() - t0
  return row


# -- outputs --------------------------------------------------------------------------------------
GROUP = ("loss", "mention_prob", "embed_dim")


def _metric_names(flat_rows: list[dict], skip=()) -> list[str]:
  names = []
  for k, v in flat_rows[0].items():
    if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
      names.append(k)
  return names


def summarize(rows: list[dict], pixel_rows: list[dict]) -> tuple[list, list]:
  flat = [study.flatten(r, sep="/") for r in rows]
  # final_loss is None for a run resumed from its final checkpoint: kept in the rows only.
  skip = set(GROUP) | {"seed", "steps", "resumed_from", "final_loss"}
  summary = study.summarize(flat, list(GROUP), _metric_names(flat, skip))
  flat_pix = [study.flatten(r, sep="/") for r in pixel_rows]
  pixels = study.summarize(flat_pix, ["features"], _metric_names(flat_pix, {"seed"}))
  return summary, pixels


def goal_checks(cfg: Config, summary: list, pixels: list) -> list[str]:
  """The issue's goals, checked against the measured means (nothing here is hard-coded)."""
  attr, lines = cfg.attribute, []
  chance = 1.0 / len(scenes.ATTRIBUTES[attr])
  small = min(cfg.embed_dims)
  mark = lambda ok: "holds" if ok else "does NOT hold"
  for loss in cfg.losses:
    by_p = {s["mention_prob"]: s for s in summary if s["loss"] == loss and s["embed_dim"] == small}
    if 0.0 in by_p:
      s = by_p[0.0]
      light, car = s[f"probe_acc/{attr}_mean"], s["probe_acc/car_color_mean"]
      lines.append(f"- {loss}, dim {small}, p = 0: {attr} probe {light:.3f} <= chance + 0.05 "
                   f"= {chance + 0.05:.2f}: {mark(light <= chance + 0.05)}; car colour probe "
                   f"{car:.3f} >= 0.95: {mark(car >= 0.95)}.")
      conv = s[f"probe_acc_conv/{attr}_mean"]
      lines.append(f"- {loss}, dim {small}, p = 0: {attr} from the trained tower's first conv "
                   f"layer {conv:.3f} >= 0.95: {mark(conv >= 0.95)}.")
    if 1.0 in by_p:
      full = by_p[1.0][f"probe_acc/{attr}_mean"]
      lines.append(f"- {loss}, dim {small}, p = 1: {attr} probe {full:.3f} >= 0.95: "
                   f"{mark(full >= 0.95)}.")
    ps = sorted(by_p)
    means = [by_p[p][f"probe_acc/{attr}_mean"] for p in ps]
    drops = [(ps[i], ps[i + 1]) for i in range(len(ps) - 1) if means[i + 1] < means[i] - 0.01]
    lines.append(f"- {loss}, dim {small}: {attr} probe non-decreasing in p (1-point tolerance): "
                 f"{mark(not drops)}" + (f" (drops between p = {drops})." if drops else "."))
  if pixels:
    lines.append(f"- raw pixels: {attr} probe {pixels[0][f'probe_acc/{attr}_mean']:.3f} "
                 f"(the information is in the input).")
  return lines


def results_markdown(cfg: Config, results: dict) -> str:
  attrs = ATTRIBUTES
  s_sorted = sorted(results["summary"], key=lambda s: tuple(s[k] for k in GROUP))
  probe_table = study.markdown_table(
      ["loss", "p", "dim", "n"] + [f"probe {a}" for a in attrs] + ["zero-shot car", "train s"],
      [[s["loss"], f"{s['mention_prob']:g}", s["embed_dim"], s["n"]]
       + [study.pm(s, f"probe_acc/{a}") for a in attrs]
       + [study.pm(s, "zero_shot_acc"), f"{s['train_seconds_mean']:.0f}"] for s in s_sorted])
  a = cfg.attribute
  control_table = study.markdown_table(
      ["loss", "p", "dim", f"{a}: embedding", "penultimate", "pooled conv", "first conv (4x4)",
       "random-init embedding", "random-init first conv", f"cos({a} flip)", "cos(car flip)",
       "cos(unrelated)"],
      [[s["loss"], f"{s['mention_prob']:g}", s["embed_dim"], study.pm(s, f"probe_acc/{a}"),
        study.pm(s, f"probe_acc_penultimate/{a}"), study.pm(s, f"probe_acc_pooled/{a}"),
        study.pm(s, f"probe_acc_conv/{a}"), study.pm(s, f"random_init_probe_acc/{a}"),
        study.pm(s, f"random_init_probe_acc_conv/{a}"),
        study.pm(s, f"embedding_invariance/{a}", "{:.4f}"),
        study.pm(s, "embedding_invariance/car_color", "{:.4f}"),
        study.pm(s, "unpaired_similarity", "{:.3f}")] for s in s_sorted])
  pix = results["pixel_summary"]
  pixel_line = ("Raw-pixel probes (once per seed): " + ", ".join(
      f"{x} {study.pm(pix[0], f'probe_acc/{x}')}" for x in attrs) + ".") if pix else ""
  mentions: dict = {}
  for r in sorted(results["rows"], key=lambda r: r["seed"]):
    mentions.setdefault(r["mention_prob"], {})[r["seed"]] = r["mentions"]
  mention_line = (f"Training captions that mention the {a} (of {cfg.num_train}; per seed "
                  f"{'/'.join(map(str, cfg.seeds))}): " + ", ".join(
                      f"p = {p:g}: {'/'.join(str(m) for m in by_seed.values())}"
                      for p, by_seed in sorted(mentions.items())) + ".")
  return (f"# Contrastive study: captions mention the {a} with probability p\n\n"
          f"Seeds {list(cfg.seeds)}; {cfg.steps} steps, batch {cfg.batch_size}, "
          f"{cfg.num_train} training scenes; probes: logistic regression on {cfg.num_probe} "
          f"held-out scenes, tested on {cfg.num_probe} more. Chance: car colour 0.25, every other "
          f"attribute 0.50. Mean ± sd over seeds.\n\n"
          f"## Linear probes on the final image embedding\n\n{probe_table}\n\n"
          f"## Where the {a} is lost (probes for the {a}) and embedding invariance\n\n"
          f"{control_table}\n\n{pixel_line}\n\n{mention_line}\n\n"
          "## Goals (checked from the numbers above)\n\n"
          + "\n".join(goal_checks(cfg, results["summary"], pix)) + "\n")


def plot(workdir: study.Workdir, cfg: Config, summary: list, pixels: list) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 3.4), sharey=True)
  positive = [p for p in cfg.mention_probs if p > 0]
  linthresh = min(positive) if positive else 1e-3
  for ax, attr in zip(axes, ATTRIBUTES):
    for loss in cfg.losses:
      for dim in cfg.embed_dims:
        ss = sorted((s for s in summary if s["loss"] == loss and s["embed_dim"] == dim),
                    key=lambda s: s["mention_prob"])
        ps = [s["mention_prob"] for s in ss]
        for field, style, label in (("probe_acc", "-o", "embedding"),
                                    ("probe_acc_conv", "--", "first conv")):
          ax.errorbar(ps, [s[f"{field}/{attr}_mean"] for s in ss],
                      yerr=[s[f"{field}/{attr}_sd"] for s in ss], fmt=style, capsize=2,
                      label=f"{loss} d={dim} {label}")
    ax.axhline(1.0 / len(scenes.ATTRIBUTES[attr]), color="grey", ls=":", label="chance")
    if pixels:
      ax.axhline(pixels[0][f"probe_acc/{attr}_mean"], color="grey", ls="-.", label="raw pixels")
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlabel(f"p (captions mention the {cfg.attribute})")
    ax.set_title(attr)
    ax.set_ylim(0, 1.02)
  axes[0].set_ylabel("held-out linear probe accuracy")
  axes[-1].legend(fontsize=7, loc="lower right")
  fig.suptitle("What the image embedding keeps, vs how often captions mention the "
               f"{cfg.attribute}")
  study.save_figure(fig, workdir.file("probe_vs_p.png"))
  plt.close(fig)


def write_results(workdir: study.Workdir, cfg: Config, rows: list, pixel_rows: list) -> dict:
  summary, pixels = summarize(rows, pixel_rows)
  results = {"study": "contrastive", "flags": workdir.flags, "rows": rows, "summary": summary,
             "pixel_rows": pixel_rows, "pixel_summary": pixels}
  return workdir.publish(results, results_markdown(cfg, results),
                         lambda w: plot(w, cfg, summary, pixels))


# -- main -----------------------------------------------------------------------------------------
def main():
  cfg = config_from_flags()
  workdir = study.Workdir(FLAGS.workdir, "contrastive", study.result_flags(RESULT_FLAGS))
  runs = [(loss, dim, p) for loss in cfg.losses for dim in cfg.embed_dims for p in cfg.mention_probs]
  total = len(runs) * len(cfg.seeds)
  logging.info("contrastive study: %d runs (losses %s, dims %s, p %s, seeds %s), %d steps each",
               total, ",".join(cfg.losses), list(cfg.embed_dims), list(cfg.mention_probs),
               list(cfg.seeds), cfg.steps)
  rows, pixel_rows, done, start = [], [], 0, time.perf_counter()
  for seed in cfg.seeds:
    data = SeedData(seed, cfg)
    pixel_rows.append(workdir.row(f"pixels_seed{seed}", lambda d=data, s=seed: pixel_row(s, d)))
    for loss, dim, p in runs:
      init_row = workdir.row(f"init_d{dim}_seed{seed}",
                             lambda l=loss, d=dim, s=seed: random_init_row(l, d, s, data))
      t0 = time.perf_counter()
      row = workdir.row(f"{run_key(loss, p, dim)}_seed{seed}",
                        lambda l=loss, p=p, d=dim, s=seed, i=init_row:
                        run_one(l, p, d, s, cfg, data, workdir, i))
      done += 1
      elapsed = time.perf_counter() - start
      logging.info("contrastive [%d/%d] %s seed %d: %s probe %.3f, car %.3f, first conv %s %.3f, "
                   "zero-shot %.3f (%.0fs; ETA %.0fs)", done, total, run_key(loss, p, dim), seed,
                   cfg.attribute, row["probe_acc"][cfg.attribute], row["probe_acc"]["car_color"],
                   cfg.attribute, row["probe_acc_conv"][cfg.attribute], row["zero_shot_acc"],
                   time.perf_counter() - t0, elapsed / done * (total - done))
      rows.append(row)
  results = write_results(workdir, cfg, rows, pixel_rows)
  print(workdir.file("results.md"))
  print(results_markdown(cfg, results))


if __name__ == "__main__":
  study.main_wrapper(main)()
