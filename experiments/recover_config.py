"""The recover study's config: every parameter declared once (``experiments.config``); the
absl flags of ``python -m experiments.recover`` are generated from it."""
from __future__ import annotations

import dataclasses

from experiments import cli
from experiments import config
from experiments import recover_runs as rr
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import storage
from invariance.data import captions as captions_lib

LIGHT = rr.LIGHT


param = config.param
# Step counts, cadences and patience live in int32 step counters (optax, orbax, the early-stopping
# state); Adam moves every weight by about the learning rate per step, so a rate above 1 cannot
# train (and a far larger one only ends in NaN).
STEPS_MAX = 2**31 - 1
RATE_MAX = 1.0
SCENE_BYTES = 4 * dashcam.IMAGE_SIZE ** 2 * 3      # one scene held in memory, float32 RGB


@dataclasses.dataclass(frozen=True)
class RecoverConfig(config.StudyConfig, config.Convergence):
  """The documented default run: 8 methods x n in {32, 128, 512} x 5 seeds, references p1 and
  init, matched-step re-captioning (f = 1) from p0, init and p1 to 400 steps."""
  DATA_PARALLEL = ("contrastive_batch_size", "tune_batch_size")

  seeds: tuple[int, ...] = param((0, 1, 2, 3, 4), "Seeds (towers, labelled scenes, batch orders).",
                                 low=0, high=2**32 - 1)
  methods: tuple[str, ...] = param(rr.METHODS, "Methods on the labelled-scenes axis (docs/studies/"
                                   "recover.md).", choices=rr.METHODS)
  n_labels: tuple[int, ...] = param((32, 128, 512), "Numbers of labelled scenes (every label a "
                                    "method uses, its validation labels included).", low=1,
                                    sort=True)
  references: tuple[str, ...] = param(
      rr.REFERENCES, "Reference towers probed like the p = 0 tower: p1 (captions always mention "
      "the light; upper reference), init (the random init the p = 0 tower started from; lower "
      "reference); empty for none.", choices=rr.REFERENCES, allow_empty=True)
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
      rr.STARTS, "Matched-step re-captioning: towers it starts from (empty: none).",
      choices=rr.STARTS, allow_empty=True)
  recaption_fractions: tuple[float, ...] = param(
      (1.0,), "Re-captioning: fractions of the training captions that mention the light.",
      low=0, high=1, sort=True)
  recaption_steps: tuple[int, ...] = param(
      (50, 100, 200, 400), "Re-captioning: contrastive steps at which the light is probed "
      "(checkpoints of one run per start, whose learning rate is constant after warmup).", low=1,
      high=STEPS_MAX, sort=True)
  recaption_learning_rate: float = param(1e-3, "Re-captioning: Adam learning rate (constant after "
                                         "warmup).", above=0, high=RATE_MAX)
  recaption_warmup_steps: int = param(25, "Re-captioning: linear warmup steps.", low=0,
                                      high=STEPS_MAX)
  learning_rates: tuple[float, ...] = param(
      (1e-3, 3e-3), "Trained methods: Adam learning rates tried (cosine decay over --tune_steps); "
      "the one with the best validation accuracy is kept.", above=0, high=RATE_MAX, sort=True)
  tune_steps: int = param(800, "Trained methods: step cap (a run still improving at it is "
                          "reported as under-trained).", low=1, high=STEPS_MAX)
  tune_batch_size: int = param(32, "Trained methods: batch size (fewer labels than a batch "
                               "repeat within it).", low=1)
  val_fraction: float = param(0.25, "Trained methods: share of the n labelled scenes held out to "
                              "choose the learning rate and the stopping step (at least one "
                              "scene; the rest train).", above=0, high=0.5)
  eval_every: int = param(25, "Trained methods: steps between validation evaluations.", low=1,
                          high=STEPS_MAX)
  patience: int = param(8, "Trained methods stop after this many evaluations in a row without a "
                        "validation gain of more than --min_delta (covers the loss plateau before "
                        "the light is picked up: about 100-200 steps).", low=1, high=STEPS_MAX)
  num_test: int = param(1000, "Held-out scenes every accuracy is measured on.", low=8)
  target_acc: float = param(0.9, "Light accuracy whose smallest n is reported per method.",
                            above=0, high=1)

  @property
  def trained(self) -> tuple:
    return tuple(m for m in self.methods if m in rr.TRAINED)

  @property
  def towers(self) -> tuple:
    """The contrastive towers (p0, p1) the run needs."""
    used = {"p0"} | set(self.references) | set(self.recaption_starts) | {
        rr.TRAINED[m].tower for m in self.trained}
    return tuple(t for t in rr.TOWER_P if t in used)

  def split(self, n: int) -> tuple[int, int]:
    """(training, validation) scenes of a trained method's n labels: the last
    ``round(n * val_fraction)`` (at least one) of the first n pool scenes validate."""
    held = max(1, round(n * self.val_fraction))
    return n - held, held

  def run_key(self, p: float) -> str:
    """The contrastive study's name of the p run (its checkpoint directory)."""
    return dashcam.run_key(self.loss, p, self.embed_dim)

  def pretrained_dir(self, seed: int, p: float = 0.0) -> str:
    """Where the ``--pretrained_workdir``'s p run of ``seed`` keeps its checkpoints."""
    return storage.join(self.pretrained_workdir, "checkpoints", self.run_key(p), str(seed))

  def check_sizes(self, limit_bytes: float | None = None) -> None:
    """Refuse counts of scenes the study cannot hold in memory (float32 images), one flag at a
    time, before any scene is generated (the line names the flag, with the estimate)."""
    for flag, count in (("num_train", self.num_train), ("n_labels", max(self.n_labels)),
                        ("num_test", self.num_test),
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
    if self.trained and self.eval_every > self.tune_steps:
      config.fail("eval_every", self.eval_every, f"allowed: <= --tune_steps={self.tune_steps}")
    if self.trained and min(self.n_labels) < 2:
      config.fail("n_labels", ",".join(map(str, self.n_labels)),
                  "allowed: every n >= 2 with trained methods (one scene trains, one validates)")
    cli.check_memory("embed_dim", self.embed_dim, de.training_bytes(
        captions_lib.Tokenizer().vocab_size, self.embed_dim, self.contrastive_batch_size))
    pretrained_steps(self)


config.define_flags(RecoverConfig)


def pretrained_steps(cfg: RecoverConfig) -> int:
  """The step of the p = 0 (and p = 1) checkpoints to start from; a ``--pretrained_workdir`` must be
  a contrastive-study workdir (its flags.json ``steps``: one length, or a list of lengths whose
  largest is where its checkpoints end) with finished p = 0 runs (and p = 1 runs when
  ``--references``, ``--recaption_starts`` or a trained method use them) of this loss and dim for every seed
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
  for p in (rr.TOWER_P[t] for t in cfg.towers):
    for seed in cfg.seeds:
      if not storage.isdir(storage.join(cfg.pretrained_dir(seed, p), str(steps))):
        config.fail(flag, path, f"has no step-{steps} checkpoint in {cfg.pretrained_dir(seed, p)}; "
                    f"allowed: a workdir whose p = {p:g} run of --loss, --embed_dim finished for "
                    "every --seeds" + (" (p = 1: for --references, --recaption_starts or "
                                       "--methods that use p1)" if p else ""))
  return steps
