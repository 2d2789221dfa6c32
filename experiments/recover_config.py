"""The recover study's config: every parameter declared once (``experiments.config``); the
absl flags of ``python -m experiments.recover`` are generated from it."""
from __future__ import annotations

import dataclasses

from experiments import cli
from experiments import config
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import storage
from invariance.data import captions as captions_lib

# Methods on the n axis: frozen probes of the p = 0 tower, and four ways to train it on n labels.
METHODS = ("probe", "probe_penultimate", "finetune", "lpft", "lastblock", "scratch")
TRAINED = ("finetune", "lpft", "lastblock", "scratch")
# Reference towers probed through the same protocol as ``probe`` / ``probe_penultimate``.
REFERENCES = ("p1", "init")
# Where matched-step re-captioning starts: the p = 0 tower, random init, the p = 1 tower.
STARTS = ("p0", "init", "p1")
LIGHT = dashcam.LIGHT
# The recovery study's fixed validation split (beside dashcam's LABELLED = 10, HELD_OUT = 11):
# learning rates and early-stopping points are chosen on it, never on the test scenes.
VALIDATION = dashcam.VALIDATION   # the recovery study's validation stream


param = config.param
# Step counts, cadences and patience live in int32 step counters (optax, orbax, the early-stopping
# state); Adam moves every weight by about the learning rate per step, so a rate above 1 cannot
# train (and a far larger one only ends in NaN).
STEPS_MAX = 2**31 - 1
RATE_MAX = 1.0
SCENE_BYTES = 4 * dashcam.IMAGE_SIZE ** 2 * 3      # one scene held in memory, float32 RGB


@dataclasses.dataclass(frozen=True)
class RecoverConfig(config.StudyConfig):
  DATA_PARALLEL = ("contrastive_batch_size", "tune_batch_size")

  methods: tuple[str, ...] = param(METHODS, "Methods on the labelled-scenes axis (see module "
                                   "docstring of experiments.recover).", choices=METHODS)
  n_labels: tuple[int, ...] = param((8, 32, 128, 512, 2048), "Numbers of labelled scenes.", low=1,
                                    sort=True)
  references: tuple[str, ...] = param(
      REFERENCES, "Reference towers probed like the p = 0 tower: p1 (captions always mention the "
      "light; upper reference), init (the random init the p = 0 tower started from; lower "
      "reference); empty for none.", choices=REFERENCES, allow_empty=True)
  pretrained_workdir: str = param("", "A finished contrastive-study workdir whose p = 0 (and, when "
                                  "used, p = 1) checkpoints of every --seeds, --loss, --embed_dim "
                                  "are the starting points; '' = pretrain here.")
  loss: str = param("clip", "Contrastive loss of the dual encoder.", choices=de.LOSSES)
  embed_dim: int = param(8, "Embedding dimension of the dual encoder.", low=1)
  num_train: int = param(20000, "Captioned training scenes (pretraining and re-captioning).",
                         low=1)
  contrastive_batch_size: int = param(128, "Batch size of pretraining and re-captioning.", low=1)
  pretrain_steps: int = param(400, "Pretraining steps (ignored with --pretrained_workdir).", low=1,
                              high=STEPS_MAX)
  pretrain_learning_rate: float = param(1e-3, "Pretraining peak Adam learning rate.", above=0,
                                        high=RATE_MAX)
  pretrain_warmup_steps: int = param(50, "Pretraining warmup steps (then cosine decay).", low=0,
                                     high=STEPS_MAX)
  recaption_starts: tuple[str, ...] = param(
      STARTS, "Matched-step re-captioning: towers it starts from (empty: none).", choices=STARTS,
      allow_empty=True)
  recaption_fractions: tuple[float, ...] = param(
      (1.0,), "Re-captioning: fractions of the training captions that mention the light.",
      low=0, high=1, sort=True)
  recaption_steps: tuple[int, ...] = param(
      (50, 100, 200, 400, 800), "Re-captioning: contrastive steps at which the light is probed "
      "(checkpoints of one run per start, whose learning rate is constant after warmup).", low=1,
      high=STEPS_MAX, sort=True)
  recaption_learning_rate: float = param(1e-3, "Re-captioning: Adam learning rate (constant after "
                                         "warmup).", above=0, high=RATE_MAX)
  recaption_warmup_steps: int = param(25, "Re-captioning: linear warmup steps.", low=0,
                                      high=STEPS_MAX)
  learning_rates: tuple[float, ...] = param(
      (3e-4, 1e-3, 3e-3), "finetune, lpft, lastblock, scratch: Adam learning rates tried (cosine "
      "decay over --tune_steps); the one with the best validation accuracy is kept.", above=0,
      high=RATE_MAX, sort=True)
  tune_steps: int = param(800, "finetune, lpft, lastblock, scratch: step cap (a run still "
                          "improving at it is reported as under-trained).", low=1,
                          high=STEPS_MAX)
  tune_batch_size: int = param(32, "finetune, lpft, lastblock, scratch: batch size (n < batch "
                               "repeats the n scenes within a batch).", low=1)
  early_stopping_every: int = param(25, "Steps between validation evaluations of a tuned run.",
                                    low=1, high=STEPS_MAX)
  early_stopping_patience: int = param(8, "A tuned run stops after this many evaluations without "
                                       "a validation gain of more than 0.005 (cover the loss "
                                       "plateau before the light is picked up: about 100-200 "
                                       "steps here).", low=1, high=STEPS_MAX)
  num_val: int = param(500, "Fixed validation scenes (their own stream) on which learning rates "
                       "and early-stopping points are chosen.", low=8)
  num_test: int = param(1000, "Held-out scenes every accuracy is measured on.", low=8)
  target_acc: float = param(0.9, "Light accuracy whose smallest n is reported per method.",
                            above=0, high=1)

  @property
  def trained(self) -> tuple:
    return tuple(m for m in self.methods if m in TRAINED)

  @property
  def uses_p1(self) -> bool:
    return "p1" in self.references or "p1" in self.recaption_starts

  def run_key(self, p: float) -> str:
    """The contrastive study's name of the p run (its checkpoint directory)."""
    return dashcam.run_key(self.loss, p, self.embed_dim)

  @property
  def pretrained_run(self) -> str:
    return self.run_key(0.0)

  def pretrained_dir(self, seed: int, p: float = 0.0) -> str:
    """Where the ``--pretrained_workdir``'s p run of ``seed`` keeps its checkpoints."""
    return storage.join(self.pretrained_workdir, "checkpoints", self.run_key(p), str(seed))

  def check_sizes(self, limit_bytes: float | None = None) -> None:
    """Refuse counts of scenes the study cannot hold in memory (float32 images), one flag at a
    time, before any scene is generated (the line names the flag, with the estimate)."""
    for flag, count in (("num_train", self.num_train), ("n_labels", max(self.n_labels)),
                        ("num_val", self.num_val), ("num_test", self.num_test),
                        ("contrastive_batch_size", self.contrastive_batch_size),
                        ("tune_batch_size", self.tune_batch_size)):
      # Exact integers (a flag may have hundreds of digits), clipped where a float would overflow.
      cli.check_memory(flag, count, float(min(SCENE_BYTES * count, 10**300)), limit_bytes)

  def validate(self):
    self.check_sizes()
    if self.pretrain_warmup_steps >= self.pretrain_steps:
      config.fail("pretrain_warmup_steps", self.pretrain_warmup_steps,
                  f"allowed: < --pretrain_steps={self.pretrain_steps}")
    if self.contrastive_batch_size > self.num_train:
      config.fail("contrastive_batch_size", self.contrastive_batch_size,
                  f"allowed: <= --num_train={self.num_train}")
    if self.recaption_starts and self.recaption_warmup_steps >= min(self.recaption_steps):
      config.fail("recaption_warmup_steps", self.recaption_warmup_steps,
                  f"allowed: < the smallest --recaption_steps ({min(self.recaption_steps)})")
    if self.trained and self.early_stopping_every > self.tune_steps:
      config.fail("early_stopping_every", self.early_stopping_every,
                  f"allowed: <= --tune_steps={self.tune_steps}")
    cli.check_memory("embed_dim", self.embed_dim, de.training_bytes(
        captions_lib.Tokenizer().vocab_size, self.embed_dim, self.contrastive_batch_size))
    pretrained_steps(self)


config.define_flags(RecoverConfig)


def pretrained_steps(cfg: RecoverConfig) -> int:
  """The step of the p = 0 (and p = 1) checkpoints to start from; a ``--pretrained_workdir`` must be
  a contrastive-study workdir (its flags.json ``steps``: one length, or a list of lengths whose
  largest is where its checkpoints end) with finished p = 0 runs (and p = 1 runs when
  ``--references`` or ``--recaption_starts`` use them) of this loss and dim for every seed
  (``main`` reads the checkpoints before it creates the workdir)."""
  flag, path = "pretrained_workdir", cfg.pretrained_workdir
  if not path:
    return cfg.pretrain_steps
  stored = storage.join(path, "flags.json")
  made_with = workdir_lib.read_json(stored, flag) if storage.isfile(stored) else None
  steps = made_with.get("steps") if isinstance(made_with, dict) else None
  if isinstance(steps, list) and steps and all(isinstance(s, int) and not isinstance(s, bool)
                                               for s in steps):
    steps = max(steps)
  if not isinstance(steps, int) or isinstance(steps, bool):
    config.fail(flag, path, ("no such directory" if not storage.isdir(path) else
                             "has no contrastive-study flags.json (with steps)")
                + "; allowed: a contrastive-study workdir, or '' to pretrain here")
  for p in (0.0, 1.0) if cfg.uses_p1 else (0.0,):
    for seed in cfg.seeds:
      if not storage.isdir(storage.join(cfg.pretrained_dir(seed, p), str(steps))):
        config.fail(flag, path, f"has no step-{steps} checkpoint in {cfg.pretrained_dir(seed, p)}; "
                    f"allowed: a workdir whose p = {p:g} run of --loss, --embed_dim finished for "
                    "every --seeds" + (" (p = 1: for --references / --recaption_starts p1)"
                                       if p else ""))
  return steps
