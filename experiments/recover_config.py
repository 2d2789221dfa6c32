"""The recover study's config: every parameter declared once (``experiments.config``); the
absl flags of ``python -m experiments.recover`` are generated from it."""
from __future__ import annotations

import dataclasses
import os

from experiments import cli
from experiments import config
from experiments import workdir as workdir_lib
from invariance import dashcam
from invariance import dual_encoder as de
from invariance.data import captions as captions_lib

METHODS = ("probe", "probe_penultimate", "finetune", "recaption", "scratch")
LIGHT = dashcam.LIGHT


param = config.param


@dataclasses.dataclass(frozen=True)
class RecoverConfig(config.StudyConfig):
  DATA_PARALLEL = ("contrastive_batch_size", "tune_batch_size")

  methods: tuple[str, ...] = param(METHODS, "Recovery methods to compare (see module docstring).",
                                   choices=METHODS)
  n_labels: tuple[int, ...] = param((8, 32, 128, 512, 2048), "Numbers of labelled scenes.", low=1,
                                    sort=True)
  recaption_fractions: tuple[float, ...] = param(
      (0.1, 1.0), "recaption: fractions of the re-captioned training captions that mention the "
      "light (0 = continue training on p = 0 captions, a control).", low=0, high=1, sort=True)
  pretrained_workdir: str = param("", "A finished contrastive-study workdir whose p = 0 "
                                  "checkpoints (one per --seeds, --loss, --embed_dim) are the "
                                  "starting point; '' = pretrain here.")
  loss: str = param("clip", "Contrastive loss of the dual encoder.", choices=de.LOSSES)
  embed_dim: int = param(8, "Embedding dimension of the dual encoder.", low=1)
  num_train: int = param(20000, "Captioned training scenes (pretraining and recaption).", low=1)
  contrastive_batch_size: int = param(128, "Batch size of pretraining and recaption.", low=1)
  pretrain_steps: int = param(400, "Pretraining steps (ignored with --pretrained_workdir).", low=1)
  pretrain_learning_rate: float = param(1e-3, "Pretraining peak Adam learning rate.", above=0)
  pretrain_warmup_steps: int = param(50, "Pretraining warmup steps (then cosine decay).", low=0)
  recaption_steps: int = param(200, "Contrastive steps on the re-captioned scenes.", low=1)
  recaption_learning_rate: float = param(1e-3, "recaption: Adam learning rate (cosine decay).",
                                         above=0)
  tune_steps: int = param(400, "finetune and scratch: training steps (any n).", low=1)
  tune_batch_size: int = param(32, "finetune and scratch: batch size (n < batch repeats the n "
                               "scenes within a batch).", low=1)
  tune_learning_rate: float = param(3e-3, "finetune and scratch: Adam learning rate (cosine "
                                    "decay); one recipe, so the two differ only in the tower's "
                                    "starting point.", above=0)
  num_test: int = param(1000, "Held-out scenes every accuracy is measured on.", low=8)
  target_acc: float = param(0.9, "Light accuracy whose smallest n is reported per method.",
                            above=0, high=1)

  @property
  def fractions(self) -> tuple:
    """The recaption fractions that run (none unless ``recaption`` is among the methods)."""
    return self.recaption_fractions if "recaption" in self.methods else ()

  @property
  def pretrained_run(self) -> str:
    """The contrastive study's name of the p = 0 run (its checkpoint directory)."""
    return dashcam.run_key(self.loss, 0.0, self.embed_dim)

  def pretrained_dir(self, seed: int) -> str:
    """Where the ``--pretrained_workdir``'s p = 0 run of ``seed`` keeps its checkpoints."""
    return os.path.join(self.pretrained_workdir, "checkpoints", self.pretrained_run, str(seed))

  def validate(self):
    if self.pretrain_warmup_steps >= self.pretrain_steps:
      config.fail("pretrain_warmup_steps", self.pretrain_warmup_steps,
                  f"allowed: < --pretrain_steps={self.pretrain_steps}")
    if self.contrastive_batch_size > self.num_train:
      config.fail("contrastive_batch_size", self.contrastive_batch_size,
                  f"allowed: <= --num_train={self.num_train}")
    cli.check_memory("embed_dim", self.embed_dim, de.training_bytes(
        captions_lib.Tokenizer().vocab_size, self.embed_dim, self.contrastive_batch_size))
    pretrained_steps(self)


config.define_flags(RecoverConfig)


def pretrained_steps(cfg: RecoverConfig) -> int:
  """The step of the p = 0 checkpoints to start from; a ``--pretrained_workdir`` must be a
  contrastive-study workdir with a finished p = 0 run of this loss and dim for every seed (``main``
  reads the checkpoints before it creates the workdir)."""
  flag, path = "pretrained_workdir", cfg.pretrained_workdir
  if not path:
    return cfg.pretrain_steps
  stored = os.path.join(path, "flags.json")
  made_with = workdir_lib.read_json(stored, flag) if os.path.isfile(stored) else None
  steps = made_with.get("steps") if isinstance(made_with, dict) else None
  if not isinstance(steps, int):
    config.fail(flag, path, ("no such directory" if not os.path.isdir(path) else
                             "has no contrastive-study flags.json (with steps)")
                + "; allowed: a contrastive-study workdir, or '' to pretrain here")
  for seed in cfg.seeds:
    if not os.path.isdir(os.path.join(cfg.pretrained_dir(seed), str(steps))):
      config.fail(flag, path, f"has no step-{steps} checkpoint in {cfg.pretrained_dir(seed)}; "
                  "allowed: a workdir whose p = 0 run of --loss, --embed_dim finished for every "
                  "--seeds")
  return steps
