"""The contrastive study's config: every parameter declared once (``experiments.config``); the
absl flags of ``python -m experiments.contrastive`` are generated from it. The defaults are the
documented default run (``experiments/configs/contrastive.flags`` holds only its header and
``--workdir``); every size and rate is checked against what can run before any work."""
from __future__ import annotations

import dataclasses

from experiments import cli
from experiments import config
from invariance import dashcam
from invariance import dual_encoder as de
from invariance.data import captions as captions_lib
from invariance.data import scenes


POLICIES = ("mention", "swap")
DUPLICATES = ("negative", "positive")
STEPS_MAX = config.STEPS_MAX       # step counters are int32
RATE_MAX = 1.0
SCENE_BYTES = 4 * 3 * dashcam.IMAGE_SIZE ** 2     # one float32 scene


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig(config.StudyConfig):
  DATA_PARALLEL = ("batch_size",)

  # The documented default's seeds and cadence (the shared fields, redeclared with its values).
  seeds: tuple[int, ...] = config.param((0, 1, 2, 3, 4), "Seeds; one row per run x seed.", low=0,
                                        high=2**32 - 1)
  log_every: int = config.param(100, "Steps between progress lines.", low=1, high=STEPS_MAX,
                                run_only=True)
  checkpoint_every: int = config.param(200, "Steps between checkpoints.", low=1, high=STEPS_MAX,
                                       run_only=True)

  losses: tuple[str, ...] = config.param(("clip",), "Contrastive losses.", choices=de.LOSSES)
  dtype: str = config.param("float32", "The towers' computation dtype (parameters, optimizer "
                            "state, embeddings and the loss stay float32).",
                            choices=("float32", "bfloat16"))
  mention_probs: tuple[float, ...] = config.param(
      (0.0, 1.0), "p: probability that a training caption mentions the varied attribute "
      "(--attribute under 'mention', the car under 'swap').", low=0, high=1, sort=True)
  embed_dims: tuple[int, ...] = config.param((8,), "Embedding dimensions.", low=1)
  attribute: str = config.param("light", "The attribute captions mention with probability p "
                                "('mention'), or always ('swap').",
                                choices=captions_lib.MENTIONABLE)
  policies: tuple[str, ...] = config.param(
      ("mention",), "Caption policies: 'mention' (the car always, --attribute with probability "
      "p) and 'swap' (--attribute always, the car with probability p).", choices=POLICIES)
  lamp_sizes: tuple[int, ...] = config.param(
      (2,), "Side of the traffic light's lamp in pixels (scene generator).",
      choices=scenes.LAMP_SIZES, sort=True)
  duplicate_captions: tuple[str, ...] = config.param(
      ("negative",), "How identical captions in a batch are scored: 'negative' (the plain loss) "
      "or 'positive' (multi-positive targets for CLIP, positive labels for SigLIP).",
      choices=DUPLICATES)
  steps: tuple[int, ...] = config.param((400,), "Training lengths in steps (each a run; the "
                                        "dose-response's second axis).", low=1, high=STEPS_MAX,
                                        sort=True)
  probe_steps: tuple[int, ...] = config.param(
      (0, 25, 50, 100, 200, 400), "Steps at which the traced runs are probed layer by layer "
      "(0 = the initialisation); each <= the longest --steps.", low=0, high=STEPS_MAX, sort=True,
      allow_empty=True)
  trace_probs: tuple[float, ...] = config.param(
      (0.0, 1.0), "The p values whose longest runs are traced through --probe_steps (each one of "
      "--mention_probs).", low=0, high=1, sort=True, allow_empty=True)
  batch_size: int = config.param(128, "Global batch size.", low=1)
  learning_rate: float = config.param(1e-3, "Peak Adam learning rate (linear warmup, cosine "
                                      "decay).", above=0, high=RATE_MAX)
  warmup_steps: int = config.param(50, "Learning-rate warmup steps.", low=0, high=STEPS_MAX)
  num_train: int = config.param(20000, "Training scenes (captioned once per seed and p).", low=1)
  num_probe: int = config.param(1000, "Held-out scenes in each probe split (train and test).",
                                low=8)
  num_pairs: int = config.param(500, "Scene pairs per attribute for the counterfactual "
                                "sensitivity.", low=2)
  # A run option: the tiled loss equals the plain one (tested to 1e-5 in values and gradients).
  tiled_threshold: int = config.param(
      16384, "Global batches of this size or more train with the tiled loss, which never holds "
      "the B x B logits (contrastive.clip_loss_tiled / siglip_loss_tiled).", low=1, run_only=True)

  def check_sizes(self, limit_bytes: float | None = None) -> None:
    """Refuse scene counts whose float32 images cannot fit in memory, one flag at a time, before
    any scene is generated (the line names the flag, with the estimate)."""
    for flag, count in (("num_train", self.num_train), ("num_probe", 2 * self.num_probe),
                        ("num_pairs", 2 * len(dashcam.ATTRIBUTES) * self.num_pairs),
                        ("batch_size", self.batch_size)):
      # Exact integers (a flag may have hundreds of digits), clipped where a float would overflow.
      cli.check_memory(flag, getattr(self, flag), float(min(SCENE_BYTES * count, 10**300)),
                       limit_bytes)

  def validate(self):
    self.check_sizes()
    if self.warmup_steps >= min(self.steps):
      config.fail("warmup_steps", self.warmup_steps,
                  f"allowed: < the shortest --steps={min(self.steps)}")
    if self.batch_size > self.num_train:
      config.fail("batch_size", self.batch_size, f"allowed: <= --num_train={self.num_train}")
    if self.probe_steps and self.probe_steps[-1] > max(self.steps):
      config.fail("probe_steps", ",".join(map(str, self.probe_steps)),
                  f"allowed: steps <= the longest --steps={max(self.steps)}")
    extra = sorted(set(self.trace_probs) - set(self.mention_probs))
    if extra:
      config.fail("trace_probs", ",".join(f"{p:g}" for p in self.trace_probs),
                  "allowed: values of --mention_probs=" +
                  ",".join(f"{p:g}" for p in self.mention_probs))
    if "positive" in self.duplicate_captions and self.batch_size >= self.tiled_threshold:
      config.fail("duplicate_captions", "positive", f"allowed: only below --tiled_threshold="
                  f"{self.tiled_threshold} (the multi-positive losses materialise the logits)")
    vocab_size = captions_lib.Tokenizer().vocab_size
    for dim in self.embed_dims:
      cli.check_memory("embed_dims", dim, de.training_bytes(vocab_size, dim, self.batch_size))


config.define_flags(ContrastiveConfig)
