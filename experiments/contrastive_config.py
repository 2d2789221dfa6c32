"""The contrastive study's config: every parameter declared once (``experiments.config``); the
absl flags of ``python -m experiments.contrastive`` are generated from it."""
from __future__ import annotations

import dataclasses

from experiments import cli
from experiments import config
from invariance import dual_encoder as de
from invariance.data import captions as captions_lib


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig(config.StudyConfig):
  DATA_PARALLEL = ("batch_size",)

  losses: tuple[str, ...] = config.param(("clip",), "Contrastive losses.", choices=de.LOSSES)
  mention_probs: tuple[float, ...] = config.param(
      (0.0, 0.001, 0.01, 1.0), "p: probability that a training caption mentions --attribute.",
      low=0, high=1, sort=True)
  embed_dims: tuple[int, ...] = config.param((8,), "Embedding dimensions.", low=1)
  attribute: str = config.param("light", "The attribute captions mention with probability p.",
                                choices=captions_lib.MENTIONABLE)
  steps: int = config.param(400, "Training steps per run.", low=1)
  batch_size: int = config.param(128, "Global batch size.", low=1)
  learning_rate: float = config.param(1e-3, "Peak Adam learning rate (linear warmup, cosine "
                                      "decay).", above=0)
  warmup_steps: int = config.param(50, "Learning-rate warmup steps.", low=0)
  num_train: int = config.param(20000, "Training scenes (captioned once per seed and p).", low=1)
  num_probe: int = config.param(1000, "Held-out scenes in each probe split (train and test).",
                                low=8)
  num_pairs: int = config.param(500, "Scene pairs per attribute for embedding invariance.", low=1)
  # A run option: the tiled loss equals the plain one (tested to 1e-5 in values and gradients).
  tiled_threshold: int = config.param(
      16384, "Global batches of this size or more train with the tiled loss, which never holds "
      "the B x B logits (contrastive.clip_loss_tiled / siglip_loss_tiled).", low=1, run_only=True)

  def validate(self):
    if self.warmup_steps >= self.steps:
      config.fail("warmup_steps", self.warmup_steps, f"allowed: < --steps={self.steps}")
    if self.batch_size > self.num_train:
      config.fail("batch_size", self.batch_size, f"allowed: <= --num_train={self.num_train}")
    vocab_size = captions_lib.Tokenizer().vocab_size
    for dim in self.embed_dims:
      cli.check_memory("embed_dims", dim, de.training_bytes(vocab_size, dim, self.batch_size))


config.define_flags(ContrastiveConfig)
