r"""Recovery study: how much post-hoc tuning brings back what caption curation squeezed out.

    python -m experiments.recover --flagfile=experiments/configs/recover.flags

Starting point, per seed: a CLIP / SigLIP dual encoder (``invariance.dual_encoder``) trained on
dashcam scenes whose captions never mention the traffic light (p = 0). It is trained here through
``train.fit`` (checkpoints in ``--workdir/checkpoints/<loss>_p0_d<dim>/<seed>``, the layout and the
data streams of the contrastive study, so with the same settings it is that study's p = 0 run), or
loaded from a finished contrastive-study workdir with ``--pretrained_workdir``.

Then, for every n in ``--n_labels`` (n labelled scenes, the first n of one labelled pool per seed,
so the sets are nested) and every seed, each method predicts the light on ``--num_test`` held-out
scenes:

  * ``probe``              linear probe (``invariance.probes``) on the frozen image embedding;
  * ``probe_penultimate``  ... on the frozen tower's last hidden layer (the projection's input):
    was the light gone before the projection, or only in it?
  * ``finetune``           the whole pretrained image tower plus a linear light head, trained on
    the n labels through ``train.fit``;
  * ``recaption``          contrastive training continued from the pretrained model on the same
    scenes re-captioned so that a fraction f (``--recaption_fractions``) of captions mention the
    light, then a linear probe on the new embedding with the n labels;
  * ``scratch``            the same tower and head from random init, trained like ``finetune``.

``car_acc`` is a car-colour probe on the representation the light is read from (the embedding for
``probe`` and ``recaption``, the penultimate layer otherwise). Every caption names the car colour,
so its labels are free: the car probe always uses the whole labelled pool (max n scenes). Rows are
keyed per (method[, f], n, seed) and resumable; results.json, results.md and
labels_to_recover.png are written atomically at the end.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable

from absl import flags
from absl import logging
import flax.linen as nn
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

METHODS = ("probe", "probe_penultimate", "finetune", "recaption", "scratch")
ATTRIBUTE = "light"                   # what the p = 0 captions never mention
IMAGE_SIZE = 32
EVAL_BATCH = 500

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", list(METHODS), "Recovery methods to compare (see module docstring).")
flags.DEFINE_list("n_labels", ["8", "32", "128", "512", "2048"], "Numbers of labelled scenes.")
flags.DEFINE_list("recaption_fractions", ["0.1", "1"],
                  "recaption: fractions of the re-captioned training captions that mention the "
                  "light (0 = continue training on p = 0 captions, a control).")
flags.DEFINE_string("pretrained_workdir", "",
                    "A finished contrastive-study workdir whose p = 0 checkpoints (one per --seeds, "
                    "--loss, --embed_dim) are the starting point; '' = pretrain here.")
flags.DEFINE_string("loss", "clip", "Contrastive loss of the dual encoder: clip or siglip.")
flags.DEFINE_integer("embed_dim", 8, "Embedding dimension of the dual encoder.")
flags.DEFINE_integer("num_train", 20000, "Captioned training scenes (pretraining and recaption).")
flags.DEFINE_integer("contrastive_batch_size", 128, "Batch size of pretraining and recaption.")
flags.DEFINE_integer("pretrain_steps", 400, "Pretraining steps (ignored with --pretrained_workdir).")
flags.DEFINE_float("pretrain_learning_rate", 1e-3, "Pretraining peak Adam learning rate.")
flags.DEFINE_integer("pretrain_warmup_steps", 50, "Pretraining warmup steps (then cosine decay).")
flags.DEFINE_integer("recaption_steps", 200, "Contrastive steps on the re-captioned scenes.")
flags.DEFINE_float("recaption_learning_rate", 1e-3, "recaption: Adam learning rate (cosine decay).")
flags.DEFINE_integer("tune_steps", 400, "finetune and scratch: training steps (any n).")
flags.DEFINE_integer("tune_batch_size", 32, "finetune and scratch: batch size (n < batch repeats "
                     "the n scenes within a batch).")
flags.DEFINE_float("tune_learning_rate", 3e-3, "finetune and scratch: Adam learning rate (cosine "
                   "decay); one recipe, so the two differ only in the tower's starting point.")
flags.DEFINE_integer("num_test", 1000, "Held-out scenes every accuracy is measured on.")
flags.DEFINE_float("target_acc", 0.9, "Light accuracy whose smallest n is reported per method.")

RESULT_FLAGS = ("methods", "n_labels", "recaption_fractions", "pretrained_workdir", "loss",
                "embed_dim", "num_train", "contrastive_batch_size", "pretrain_steps",
                "pretrain_learning_rate", "pretrain_warmup_steps", "recaption_steps",
                "recaption_learning_rate", "tune_steps", "tune_batch_size", "tune_learning_rate",
                "num_test", "target_acc", "seeds", "prng_impl")


# -- config ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
  methods: tuple
  n_labels: tuple                 # ascending
  recaption_fractions: tuple      # ascending; () when recaption is not run
  seeds: tuple
  loss: str
  embed_dim: int
  pretrained_workdir: str         # '' = pretrain here
  pretrained_steps: int           # step of the p = 0 checkpoint to start from
  num_train: int
  contrastive_batch_size: int
  pretrain_steps: int
  pretrain_learning_rate: float
  pretrain_warmup_steps: int
  recaption_steps: int
  recaption_learning_rate: float
  tune_steps: int
  tune_batch_size: int
  tune_learning_rate: float
  num_test: int
  target_acc: float


def pretrained_key(loss: str, dim: int) -> str:
  """The contrastive study's run key of its p = 0 run (``experiments.contrastive.run_key``)."""
  return f"{loss}_p{0.0:g}_d{dim}"


def finished_steps(directory: str) -> list[int]:
  """Steps of the finished orbax checkpoints in ``directory`` (unfinished ones are temp dirs)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def check_pretrained_workdir(path: str, loss: str, dim: int, seeds: tuple) -> int:
  """The step of the finished p = 0 checkpoints of every seed in a contrastive-study workdir."""
  flag = "pretrained_workdir"
  if not os.path.isdir(path):
    study.fail(flag, path, "no such directory; allowed: a contrastive-study workdir, or '' to "
               "pretrain here")
  try:
    with open(os.path.join(path, "flags.json")) as f:
      made_with = json.load(f)
    losses, dims = list(made_with["losses"]), [int(d) for d in made_with["embed_dims"]]
    probs, steps = [float(p) for p in made_with["mention_probs"]], int(made_with["steps"])
  except (OSError, ValueError, KeyError, TypeError):
    study.fail(flag, path, "has no contrastive-study flags.json (losses, mention_probs, "
               "embed_dims, steps); allowed: a contrastive-study workdir")
  if loss not in losses or dim not in dims or 0.0 not in probs:
    study.fail(flag, path, f"holds losses {losses}, dims {dims}, p {probs}; allowed: a workdir "
               f"with a p = 0 run of --loss={loss} --embed_dim={dim}")
  for seed in seeds:
    directory = os.path.join(path, "checkpoints", pretrained_key(loss, dim), str(seed))
    if steps not in finished_steps(directory):
      study.fail(flag, path, f"has no finished step-{steps} checkpoint in {directory}; allowed: a "
                 "workdir whose p = 0 run finished for every --seeds")
  return steps


def config_from_flags() -> Config:
  """Validate every flag before any work."""
  methods = study.check_choices("methods", FLAGS.methods, METHODS)
  if len(set(methods)) != len(methods):
    study.fail("methods", ",".join(methods), "allowed: distinct methods")
  n_labels = tuple(sorted(study.number_list("n_labels", int, 1)))
  fractions = ()
  if "recaption" in methods:
    fractions = tuple(sorted(study.number_list("recaption_fractions", float, 0.0, 1.0)))
  seeds = tuple(study.parse_seeds())
  if FLAGS.loss not in de.LOSSES:
    study.fail("loss", FLAGS.loss, f"unknown; allowed: {', '.join(de.LOSSES)}")
  for name in ("embed_dim", "num_train", "contrastive_batch_size", "pretrain_steps",
               "recaption_steps", "tune_steps", "tune_batch_size"):
    study.check_positive(name, FLAGS[name].value)
  study.check_positive("num_test", FLAGS.num_test, 8)
  study.check_positive("pretrain_warmup_steps", FLAGS.pretrain_warmup_steps, 0)
  if FLAGS.pretrain_warmup_steps >= FLAGS.pretrain_steps:
    study.fail("pretrain_warmup_steps", FLAGS.pretrain_warmup_steps,
               f"allowed: < --pretrain_steps={FLAGS.pretrain_steps}")
  if FLAGS.contrastive_batch_size > FLAGS.num_train:
    study.fail("contrastive_batch_size", FLAGS.contrastive_batch_size,
               f"allowed: <= --num_train={FLAGS.num_train}")
  for name in ("contrastive_batch_size", "tune_batch_size"):
    study.check_data_parallel(name)
  for name in ("pretrain_learning_rate", "recaption_learning_rate", "tune_learning_rate"):
    if not FLAGS[name].value > 0:
      study.fail(name, FLAGS[name].value, "allowed: > 0")
  if not 0.0 < FLAGS.target_acc <= 1.0:
    study.fail("target_acc", FLAGS.target_acc, "allowed: in (0, 1]")
  pretrained_steps = FLAGS.pretrain_steps
  if FLAGS.pretrained_workdir:
    pretrained_steps = check_pretrained_workdir(FLAGS.pretrained_workdir, FLAGS.loss,
                                                FLAGS.embed_dim, seeds)
  return Config(methods=tuple(methods), n_labels=n_labels, recaption_fractions=fractions,
                seeds=seeds, loss=FLAGS.loss, embed_dim=FLAGS.embed_dim,
                pretrained_workdir=FLAGS.pretrained_workdir, pretrained_steps=pretrained_steps,
                num_train=FLAGS.num_train, contrastive_batch_size=FLAGS.contrastive_batch_size,
                pretrain_steps=FLAGS.pretrain_steps,
                pretrain_learning_rate=FLAGS.pretrain_learning_rate,
                pretrain_warmup_steps=FLAGS.pretrain_warmup_steps,
                recaption_steps=FLAGS.recaption_steps,
                recaption_learning_rate=FLAGS.recaption_learning_rate,
                tune_steps=FLAGS.tune_steps, tune_batch_size=FLAGS.tune_batch_size,
                tune_learning_rate=FLAGS.tune_learning_rate, num_test=FLAGS.num_test,
                target_acc=FLAGS.target_acc)


# -- models ---------------------------------------------------------------------------------------
class LightClassifier(nn.Module):
  """The dual encoder's image tower (same submodule name, so pretrained weights slot in) plus a
  linear head on its penultimate layer."""

  widths: tuple
  strides: tuple
  hidden: int
  classes: int

  @nn.compact
  def __call__(self, images_NHWC) -> dict:
    feats = de.ImageTower(self.widths, self.strides, self.hidden, name="image_tower")(images_NHWC)
    return {"penultimate": feats["penultimate"],
            "logits": nn.Dense(self.classes, name="head")(feats["penultimate"])}


class Models:
  """The dual encoder and the light classifier, their losses and jitted evaluation functions.

  One instance per run: every seed, n and fraction reuses the same loss and optimizer objects, so
  ``train.fit`` compiles each update step once.
  """

  def __init__(self, cfg: Config, tokenizer: captions_lib.Tokenizer):
    self.dual = de.DualEncoder(tokenizer.vocab_size, cfg.embed_dim, cfg.loss)
    self.example = de.example_inputs(IMAGE_SIZE, tokenizer.max_len)
    self.dual_init = jax.jit(self.dual.init)
    self.contrastive_loss = de.make_loss_fn(self.dual)
    keep = ("penultimate", "embedding")
    self.dual_features = jax.jit(lambda p, x: {k: v for k, v in self.dual.apply(
        p, x, method="image_features").items() if k in keep})
    self.classifier = LightClassifier(tuple(self.dual.widths), tuple(self.dual.strides),
                                      self.dual.hidden, len(scenes.ATTRIBUTES[ATTRIBUTE]))
    self.classifier_init = jax.jit(self.classifier.init)
    self.classify = jax.jit(self.classifier.apply)
    self.pretrain_optimizer = optax.adam(optax.warmup_cosine_decay_schedule(
        0.0, cfg.pretrain_learning_rate, cfg.pretrain_warmup_steps, cfg.pretrain_steps))
    self.recaption_optimizer = optax.adam(optax.cosine_decay_schedule(
        cfg.recaption_learning_rate, cfg.recaption_steps))
    self.tune_optimizer = optax.adam(optax.cosine_decay_schedule(cfg.tune_learning_rate,
                                                                 cfg.tune_steps))

    def tune_loss(params, batch, rng):
      del rng
      logits = self.classifier.apply(params, batch["images"])["logits"]
      return train.cross_entropy(logits, batch["labels"]), {
          "acc": metrics.accuracy(logits, batch["labels"])}
    self.tune_loss = tune_loss

  def dual_params(self, seed: int):
    """The dual encoder's init for a seed (the contrastive study's init for the same seed)."""
    return self.dual_init(jax.random.key(seed), *self.example)

  def classifier_params(self, seed: int, tower=None):
    """Random init (``scratch``), or the pretrained tower under a randomly initialised head."""
    params = self.classifier_init(jax.random.key(seed + 20_000), self.example[0])
    params = jax.device_get(params)
    if tower is not None:
      params["params"]["image_tower"] = tower
    return params


def load_params(directory: str, step: int, like, flag: str = "pretrained_workdir"):
  """The ``params`` of the orbax checkpoint at ``step`` in ``directory`` (numpy), checked against the
  shapes of ``like``."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(directory):
    study.fail(flag, directory, "no such checkpoint directory")
  manager = ocp.CheckpointManager(os.path.abspath(directory),
                                  options=ocp.CheckpointManagerOptions(create=False),
                                  item_handlers=ocp.StandardCheckpointHandler())
  # Restore onto this process's first device, not the sharding the checkpoint was saved with
  # (that names the devices, and under --distributed the hosts, of the run that wrote it).
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
                          dict(manager.item_metadata(step)))
    state = manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as e:  # orbax raises many types for damaged files
    study.fail(flag, directory, f"checkpoint at step {step} is unreadable ({type(e).__name__}); "
               "allowed: a finished, readable checkpoint")
  finally:
    manager.close()
  params = jax.device_get(state["params"])
  shapes = lambda t: jax.tree.map(lambda x: tuple(np.shape(x)), t)
  if jax.tree.structure(params) != jax.tree.structure(like) or shapes(params) != shapes(like):
    study.fail(flag, directory, "its checkpoint's parameters do not match this dual encoder "
               "(--loss, --embed_dim); allowed: a checkpoint of the same model")
  return params


# -- one seed: data, pretrained model, recaptioned models (all lazy) ------------------------------
class SeedRun:
  """What one seed's rows share, computed only when a missing row needs it.

  numpy streams ``[seed, k]``: k = 0 training scenes and k = 4 their p = 0 captions (the
  contrastive study's streams), k = 5 recaption captions (one stream for every fraction, so the
  scenes that mention the light at a smaller f also mention it at every larger f), k = 10 the
  labelled pool, k = 11 the held-out test scenes.
  """

  def __init__(self, seed: int, cfg: Config, models: Models, workdir: study.Workdir,
               tokenizer: captions_lib.Tokenizer):
    self.seed, self.cfg, self.models, self.workdir = seed, cfg, models, workdir
    self.tokenizer = tokenizer
    self._params: dict = {}        # "pretrained" / fraction -> dual encoder params (numpy)
    self._features: dict = {}      # same keys -> {"pool": feats, "test": feats}
    self._car_acc: dict = {}

  # data
  @functools.cached_property
  def train(self):
    return scenes.make_scenes(self.cfg.num_train, np.random.default_rng([self.seed, 0]),
                              IMAGE_SIZE)[:2]

  @functools.cached_property
  def pool(self):
    return scenes.make_scenes(max(self.cfg.n_labels), np.random.default_rng([self.seed, 10]),
                              IMAGE_SIZE)[:2]

  @functools.cached_property
  def test(self):
    return scenes.make_scenes(self.cfg.num_test, np.random.default_rng([self.seed, 11]),
                              IMAGE_SIZE)[:2]

  def captions(self, p: float, stream: int) -> list[str]:
    return captions_lib.make_captions(self.train[1], "mention",
                                      np.random.default_rng([self.seed, stream]), p=p,
                                      attribute=ATTRIBUTE)

  def _contrastive_fit(self, params, p: float, stream: int, optimizer, steps: int, name: str,
                       checkpoint_dir: str):
    captions = self.captions(p, stream)
    arrays = {"images": self.train[0], "tokens": self.tokenizer.encode(captions)}
    batch_at = pipeline.train_batch_fn(arrays, self.cfg.contrastive_batch_size, seed=self.seed)
    tcfg = train.TrainConfig(steps=steps, name=f"{name}/seed{self.seed}",
                             log_every=FLAGS.log_every, checkpoint_dir=checkpoint_dir,
                             checkpoint_every=FLAGS.checkpoint_every)
    params, history = train.fit(self.models.contrastive_loss, params, batch_at, optimizer, tcfg,
                                jax.random.key(self.seed + 10_000))
    mentions = int(sum(captions_lib.mentions(c, ATTRIBUTE) for c in captions))
    return jax.device_get(params), history, mentions

  # the p = 0 starting point
  def _pretrained_dir(self) -> str:
    key = pretrained_key(self.cfg.loss, self.cfg.embed_dim)
    if self.cfg.pretrained_workdir:
      return os.path.join(self.cfg.pretrained_workdir, "checkpoints", key, str(self.seed))
    return self.workdir.checkpoint_dir(key, self.seed)

  def pretrain_row(self) -> dict:
    """Pretrain (or find) the p = 0 model; its row says where it came from."""
    row = {"seed": self.seed, "steps": self.cfg.pretrained_steps, "mentions": 0}
    if self.cfg.pretrained_workdir:
      self.params("pretrained")                   # loads it: fails early if it is unreadable
      return {**row, "source": self._pretrained_dir(), "train_seconds": 0.0}
    params, history, mentions = self._contrastive_fit(
        jax.device_get(self.models.dual_params(self.seed)), 0.0, 4, self.models.pretrain_optimizer,
        self.cfg.pretrain_steps, pretrained_key(self.cfg.loss, self.cfg.embed_dim),
        self._pretrained_dir())
    self._params["pretrained"] = params
    return {**row, "source": "pretrained here", "mentions": mentions,
            "train_seconds": history["seconds"],
            "final_loss": history["loss"][-1] if history["loss"] else None}

  def recaption_row(self, fraction: float) -> dict:
    """Continue contrastive training on captions that mention the light with probability f."""
    params, history, mentions = self._contrastive_fit(
        self.params("pretrained"), fraction, 5, self.models.recaption_optimizer,
        self.cfg.recaption_steps, f"recaption_f{fraction:g}", self._recaption_dir(fraction))
    self._params[fraction] = params
    return {"seed": self.seed, "recaption_fraction": fraction, "steps": self.cfg.recaption_steps,
            "mentions": mentions, "train_seconds": history["seconds"],
            "final_loss": history["loss"][-1] if history["loss"] else None}

  def _recaption_dir(self, fraction: float) -> str:
    return self.workdir.checkpoint_dir(f"recaption_f{fraction:g}", self.seed)

  def params(self, which):
    """Dual encoder params: ``"pretrained"`` or a recaption fraction (loaded from the finished
    checkpoint when an earlier process trained it)."""
    if which not in self._params:
      like = jax.device_get(self.models.dual_params(self.seed))
      if which == "pretrained":
        flag = "pretrained_workdir" if self.cfg.pretrained_workdir else "workdir"
        self._params[which] = load_params(self._pretrained_dir(), self.cfg.pretrained_steps, like,
                                          flag=flag)
      else:
        self._params[which] = load_params(self._recaption_dir(which), self.cfg.recaption_steps,
                                          like, flag="workdir")
    return self._params[which]

  def features(self, which) -> dict:
    if which not in self._features:
      params = self.params(which)
      fn = lambda x: self.models.dual_features(params, x)
      self._features[which] = {"pool": study.batched_apply(fn, self.pool[0], EVAL_BATCH),
                               "test": study.batched_apply(fn, self.test[0], EVAL_BATCH)}
    return self._features[which]

  # measurements
  def car_acc(self, which, representation: str) -> float:
    """Car-colour probe on the whole labelled pool (its labels are free: captions name it)."""
    key = (which, representation)
    if key not in self._car_acc:
      f = self.features(which)
      self._car_acc[key] = probes.linear_probe(f["pool"][representation], self.pool[1]["car_color"],
                                        f["test"][representation], self.test[1]["car_color"])
    return self._car_acc[key]

  def probe_row(self, which, representation: str, n: int) -> dict:
    f = self.features(which)
    t0 = time.perf_counter()
    light = probes.linear_probe(f["pool"][representation][:n], self.pool[1][ATTRIBUTE][:n],
                         f["test"][representation], self.test[1][ATTRIBUTE])
    seconds = time.perf_counter() - t0
    return {"n_labels": n, "seed": self.seed, "representation": representation,
            "light_acc": light, "car_acc": self.car_acc(which, representation),
            "train_seconds": seconds}

  def tune_row(self, method: str, n: int) -> dict:
    """finetune (pretrained tower) or scratch (random tower): tower + head on n labels."""
    tower = self.params("pretrained")["params"]["image_tower"] if method == "finetune" else None
    params = self.models.classifier_params(self.seed, tower)
    arrays = {"images": self.pool[0][:n], "labels": self.pool[1][ATTRIBUTE][:n]}
    batch_at = pipeline.train_batch_fn(arrays, self.cfg.tune_batch_size, seed=self.seed)
    tcfg = train.TrainConfig(steps=self.cfg.tune_steps, name=f"{method}_n{n}/seed{self.seed}",
                             log_every=FLAGS.log_every,
                             checkpoint_dir=self.workdir.checkpoint_dir(f"{method}_n{n}", self.seed),
                             checkpoint_every=FLAGS.checkpoint_every)
    params, history = train.fit(self.models.tune_loss, params, batch_at,
                                self.models.tune_optimizer, tcfg, jax.random.key(self.seed))
    fn = lambda x: self.models.classify(params, x)
    pool = study.batched_apply(fn, self.pool[0], EVAL_BATCH)
    test = study.batched_apply(fn, self.test[0], EVAL_BATCH)
    light = float(np.mean(test["logits"].argmax(-1) == self.test[1][ATTRIBUTE]))
    car = probes.linear_probe(pool["penultimate"], self.pool[1]["car_color"], test["penultimate"],
                       self.test[1]["car_color"])
    return {"n_labels": n, "seed": self.seed, "representation": "penultimate",
            "light_acc": light, "car_acc": car, "train_seconds": history["seconds"],
            "steps": self.cfg.tune_steps,
            "final_loss": history["loss"][-1] if history["loss"] else None}


# -- outputs --------------------------------------------------------------------------------------
def curve(row: dict) -> str:
  """The name of a row's curve: the method, or ``recaption f=<fraction>``."""
  if row["method"] == "recaption":
    return f"recaption f={row['recaption_fraction']:g}"
  return row["method"]


def curve_order(cfg: Config) -> list[str]:
  names = []
  for m in cfg.methods:
    if m == "recaption":
      names += [curve({"method": m, "recaption_fraction": f}) for f in cfg.recaption_fractions]
    else:
      names.append(m)
  return names


def summarize(rows: list[dict]) -> list[dict]:
  return study.summarize([dict(r, curve=curve(r)) for r in rows], ["curve", "n_labels"],
                         ["light_acc", "car_acc", "train_seconds"])


def smallest_n(cfg: Config, summary: list[dict]) -> dict:
  """Per curve, the smallest n whose mean light accuracy reaches the target (None: never)."""
  out = {}
  for name in curve_order(cfg):
    ok = sorted(s["n_labels"] for s in summary
                if s["curve"] == name and s["light_acc_mean"] >= cfg.target_acc)
    out[name] = ok[0] if ok else None
  return out


def _fmt_n(n) -> str:
  return "not reached" if n is None else str(n)


def reading(cfg: Config, results: dict) -> list[str]:
  """A reading generated from the numbers (no claim is hard-coded)."""
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves, top, target = curve_order(cfg), max(cfg.n_labels), cfg.target_acc
  light = lambda c, n: by[(c, n)]["light_acc_mean"]
  lines = []
  if "probe" in curves and "probe_penultimate" in curves:
    emb, pen = light("probe", top), light("probe_penultimate", top)
    if pen >= target:
      where = "still linearly there before the projection: the projection squeezed it out"
    elif pen >= emb + 0.05:
      where = (f"partly there before the projection (below the {target:.0%} target), and further "
               "lost in it")
    else:
      where = "already gone before the projection (the tower itself dropped it)"
    lines.append(f"- The p = 0 model: with all {top} labels a light probe reads {emb:.3f} from the "
                 f"embedding and {pen:.3f} from the penultimate layer (chance 0.50): the light is "
                 f"{where}.")
  reached = []
  for c, n in results["smallest_n"].items():
    if n is None:
      continue
    later = [m for m in cfg.n_labels if m > n and light(c, m) < target]
    note = ""
    if later:
      runs = [r for r in results["rows"] if curve(r) == c and r["n_labels"] in later]
      stuck = sum(r["light_acc"] < 0.6 for r in runs)
      note = (f" (but below it again at n = {later}, where {stuck} of {len(runs)} runs stayed "
              "near chance, < 0.60)")
    reached.append(f"`{c}` at n = {n}{note}")
  never = [f"`{c}`" for c, n in results["smallest_n"].items() if n is None]
  lines.append(f"- {target:.0%} light accuracy: " + (", ".join(reached) if reached else "no method")
               + (f"; never within n <= {top}: " + ", ".join(never) if never else "") + ".")
  if "finetune" in curves and "scratch" in curves:
    diffs = {n: light("finetune", n) - light("scratch", n) for n in cfg.n_labels}
    ahead = [n for n, d in diffs.items() if d > 0.02]
    behind = [n for n, d in diffs.items() if d < -0.02]
    tie = [n for n, d in diffs.items() if abs(d) <= 0.02]
    parts = []
    if ahead:
      parts.append(f"ahead of `scratch` at n = {ahead}")
    if behind:
      parts.append(f"behind it at n = {behind}")
    if tie:
      parts.append(f"within 2 points at n = {tie}")
    lines.append("- Pretraining as a starting point: `finetune` is " + ", ".join(parts)
                 + f" (largest gap {max(diffs.values(), key=abs):+.3f}).")
  rec = [c for c in curves if c.startswith("recaption")]
  if rec:
    mentions = {}
    for r in results["recaption_runs"]:
      mentions.setdefault(r["recaption_fraction"], []).append(r["mentions"])
    parts = []
    for c in rec:
      f = float(c.split("=")[1])
      parts.append(f"f = {f:g} ({np.mean(mentions[f]):.0f} light captions of {cfg.num_train}): "
                   f"{light(c, min(cfg.n_labels)):.3f} at n = {min(cfg.n_labels)}, "
                   f"{light(c, top):.3f} at n = {top}")
    lines.append(f"- Re-captioning ({cfg.recaption_steps} more contrastive steps), then a probe "
                 "on the new embedding: " + "; ".join(parts) + ". Its light labels come from "
                 "captions, so its cost is those captions plus the n probe labels.")
  if "probe" in curves:
    base = by[("probe", top)]["car_acc_mean"]
    worst = {c: min(by[(c, n)]["car_acc_mean"] for n in cfg.n_labels) for c in curves}
    dropped = [f"`{c}` ({v:.3f})" for c, v in worst.items() if v < base - 0.05]
    kept = [c for c, v in worst.items() if v >= base - 0.05]
    lines.append(f"- Car colour (the pretrained embedding's probe: {base:.3f}): within 5 points "
                 f"at every n for " + (", ".join(f"`{c}`" for c in kept) or "no method")
                 + ("; lower for " + ", ".join(dropped) + " (worst n)" if dropped else "") + ".")
  return lines


def results_markdown(cfg: Config, results: dict) -> str:
  by = {(s["curve"], s["n_labels"]): s for s in results["summary"]}
  curves = curve_order(cfg)
  light_table = study.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels] + [f"n for {cfg.target_acc:.0%}"],
      [[c] + [study.pm(by[(c, n)], "light_acc") for n in cfg.n_labels]
       + [_fmt_n(results["smallest_n"][c])] for c in curves])
  car_table = study.markdown_table(
      ["method"] + [f"n = {n}" for n in cfg.n_labels] + ["train s (mean, largest n)"],
      [[c] + [study.pm(by[(c, n)], "car_acc") for n in cfg.n_labels]
       + [f"{by[(c, max(cfg.n_labels))]['train_seconds_mean']:.1f}"] for c in curves])
  pre = results["pretrain"]
  source = (f"loaded from `{cfg.pretrained_workdir}`" if cfg.pretrained_workdir else
            f"pretrained here ({np.mean([p['train_seconds'] for p in pre]):.0f} s per seed)")
  return (f"# Recovery study: bringing back the {ATTRIBUTE} after p = 0 captions\n\n"
          f"Start: {cfg.loss} dual encoder, embedding dim {cfg.embed_dim}, {cfg.pretrained_steps} "
          f"steps on {cfg.num_train} scenes whose captions never mention the {ATTRIBUTE}, "
          f"{source}. Seeds {list(cfg.seeds)}; accuracy on {cfg.num_test} held-out scenes, mean ± "
          f"sd over seeds; chance 0.50 ({ATTRIBUTE}), 0.25 (car colour). finetune / scratch: "
          f"{cfg.tune_steps} steps, batch {cfg.tune_batch_size}; recaption: "
          f"{cfg.recaption_steps} contrastive steps, then a probe.\n\n"
          f"## {ATTRIBUTE.capitalize()} accuracy vs labelled scenes n\n\n{light_table}\n\n"
          f"## Car-colour accuracy (probe on the same representation; its labels come free with "
          f"every caption, so it always uses all {max(cfg.n_labels)} pool scenes)\n\n"
          f"{car_table}\n\n## Reading (generated from the numbers)\n\n"
          + "\n".join(reading(cfg, results)) + "\n")


def plot(workdir: study.Workdir, cfg: Config, summary: list[dict]) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  for ax, metric, title, chance in ((axes[0], "light_acc", f"{ATTRIBUTE} (held out)", 0.5),
                                    (axes[1], "car_acc", "car colour (same representation)",
                                     0.25)):
    for name in curve_order(cfg):
      ss = sorted((s for s in summary if s["curve"] == name), key=lambda s: s["n_labels"])
      ax.errorbar([s["n_labels"] for s in ss], [s[metric + "_mean"] for s in ss],
                  yerr=[s[metric + "_sd"] for s in ss], fmt="-o", capsize=2, ms=3, label=name)
    ax.axhline(chance, color="grey", ls=":", label="chance")
    if metric == "light_acc":
      ax.axhline(cfg.target_acc, color="grey", ls="--", label=f"{cfg.target_acc:.0%}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled scenes n")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
  axes[0].set_ylabel("accuracy")
  axes[1].legend(fontsize=7, loc="lower right")
  fig.suptitle(f"Labels to recover the {ATTRIBUTE} after p = 0 captions")
  study.save_figure(fig, workdir.file("labels_to_recover.png"))
  plt.close(fig)


def write_results(workdir: study.Workdir, cfg: Config, rows: list, pretrain: list,
                  recaption_runs: list) -> dict:
  summary = summarize(rows)
  results = {"study": "recover", "flags": workdir.flags, "rows": rows, "summary": summary,
             "smallest_n": smallest_n(cfg, summary), "target_acc": cfg.target_acc,
             "pretrain": pretrain, "recaption_runs": recaption_runs}
  return workdir.publish(results, results_markdown(cfg, results), lambda w: plot(w, cfg, summary))


# -- main -----------------------------------------------------------------------------------------
def main():
  cfg = config_from_flags()
  workdir = study.Workdir(FLAGS.workdir, "recover", study.result_flags(RESULT_FLAGS))
  tokenizer = captions_lib.Tokenizer()
  models = Models(cfg, tokenizer)
  arms = [(m, None) for m in cfg.methods if m != "recaption"]
  arms += [("recaption", f) for f in cfg.recaption_fractions]
  total = len(cfg.seeds) * len(cfg.n_labels) * len(arms)
  logging.info("recover study: %d rows (methods %s, fractions %s, n %s, seeds %s), start: %s",
               total, ",".join(cfg.methods), list(cfg.recaption_fractions), list(cfg.n_labels),
               list(cfg.seeds), cfg.pretrained_workdir or "pretrained here")
  rows, pretrain, recaption_runs, done, start = [], [], [], 0, time.perf_counter()
  for seed in cfg.seeds:
    run = SeedRun(seed, cfg, models, workdir, tokenizer)
    pretrain.append(workdir.row(f"pretrain_seed{seed}", run.pretrain_row))
    runs = {f: workdir.row(f"recaption_run_f{f:g}_seed{seed}", lambda f=f: run.recaption_row(f))
            for f in cfg.recaption_fractions}
    recaption_runs += runs.values()
    for n in cfg.n_labels:
      for method, f in arms:
        if method in ("probe", "probe_penultimate"):
          rep = "embedding" if method == "probe" else "penultimate"
          compute = lambda rep=rep, n=n: run.probe_row("pretrained", rep, n)
          key = f"{method}_n{n}_seed{seed}"
        elif method == "recaption":
          # train_seconds: the recaption run this row's probe reads (shared by every n).
          compute = lambda f=f, n=n, r=runs: dict(run.probe_row(f, "embedding", n),
                                                  recaption_fraction=f,
                                                  train_seconds=r[f]["train_seconds"])
          key = f"recaption_f{f:g}_n{n}_seed{seed}"
        else:
          compute = lambda method=method, n=n: run.tune_row(method, n)
          key = f"{method}_n{n}_seed{seed}"
        t0 = time.perf_counter()
        row = workdir.row(key, lambda c=compute, m=method: {"method": m, **c()})
        rows.append(row)
        done += 1
        logging.info("recover [%d/%d] %s seed %d n %d: light %.3f car %.3f (%.1fs; ETA %.0fs)",
                     done, total, curve(row), seed, n, row["light_acc"], row["car_acc"],
                     time.perf_counter() - t0,
                     (time.perf_counter() - start) / done * (total - done))
  rows.sort(key=lambda r: (curve_order(cfg).index(curve(r)), r["n_labels"], r["seed"]))
  results = write_results(workdir, cfg, rows, pretrain, recaption_runs)
  print(workdir.file("results.md"))
  print(results_markdown(cfg, results))


if __name__ == "__main__":
  study.main_wrapper(main)()
