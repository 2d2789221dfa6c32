"""The orbit study's config, its defaults the documented default run, and its typed runs.

    python -m experiments.orbit --workdir=workdir/orbit        # the default run

Every parameter is declared once, as a field of ``OrbitConfig`` (``experiments.config``); the
absl flags of ``python -m experiments.orbit`` are generated from it. The model hyperparameters
(MLP widths, ConvNet channels, ...) live here and nowhere else: ``model_spec`` hands them to
``invariance.models``. A run of the study is an ``OrbitRun`` (an ``Arm`` x a seed); its row key,
the arms' names and the names of derived rows are defined here and imported by the main and the
report.
"""
from __future__ import annotations

import dataclasses

from experiments import cli
from experiments import config
from invariance import models
from invariance.data import curation

param = config.param
# Step counts, evaluation cadences, patience and every count of examples or batches live in int32
# counters (optax, orbax, the early-stopping state, array indices); Adam moves every weight by about
# the learning rate per step, so a rate above 1 cannot train.
STEPS_MAX = config.STEPS_MAX
COUNT_MAX = 2**31 - 1
RATE_MAX = 1.0
SEED_MAX = 2**32 - 1      # numpy and scikit-learn seeds (the digits' split)
# The study's evaluation batch (accuracies, the audit, the maps: experiments/orbit_measure.py).
EVAL_BATCH = 256
# mlp_aug_full's parameters averaged over the whole orbit at test time: a derived row's suffix.
ORBIT_EVAL_SUFFIX = "_orbit_eval"
DEFAULT_MODELS = ("mlp", "mlp_aug_full", "orbit_full", "cnn_gap", "cnn_flat", "cnn_aps")


@dataclasses.dataclass(frozen=True)
class OrbitConfig(config.StudyConfig, config.Convergence):
  """Defaults: 8x8 digits placed only in the bottom half of a 24x24 canvas, the arms that carry
  the study's claims, 5 seeds, each arm trained under the convergence rule (``Convergence``)."""
  DATA_PARALLEL = ("batch_size",)

  seeds: tuple[int, ...] = param((0, 1, 2, 3, 4), "Seeds; one row per run x seed (a seed sets the "
                                 "digit split and placements as well as the init).", low=0,
                                 high=SEED_MAX)
  dataset: str = param("digits", "TFDS image-classification dataset NAME[/CONFIG][:VERSION] "
                       "(digits: scikit-learn's bundled 8x8 digits, built locally on first use).")
  object_size: int = param(8, "Objects are resized to this side (pixels).", low=1, high=COUNT_MAX)
  channels: int = param(1, "1: grey (luminance), 3: colour.", low=1, high=3)
  group: str = param("translations", "Symmetry group studied.",
                     choices=("translations", "rotations"))
  models: tuple[str, ...] = param(DEFAULT_MODELS, "Models to compare (invariance/models.py).",
                                  choices=models.NAMES)
  canvas: int = param(24, "Canvas side for translations (at least --object_size).", low=1,
                      high=COUNT_MAX)
  support: str = param("bottom", "Training placement support.",
                       choices=tuple(curation.COMPLEMENT))
  placements_per_image: int = param(8, "Placed copies of each training digit.", low=1,
                                    high=COUNT_MAX)
  steps: int = param(3000, "Step cap per model (see --model_steps); the cosine schedule decays "
                     "over it.", low=1, high=STEPS_MAX)
  model_steps: tuple[str, ...] = param((), "Per-model overrides, e.g. orbit_full:400,cnn_gap:600.",
                                       allow_empty=True)
  batch_size: int = param(64, "Global batch size.", low=1, high=COUNT_MAX)
  learning_rate: float = param(3e-3, "Adam learning rate.", above=0, high=RATE_MAX)
  dtype: str = param("float32", "Computation dtype of the models (parameters and optimizer "
                     "state stay float32); bfloat16 is what TPUs and recent GPUs train in.",
                     choices=("float32", "bfloat16"))
  mlp_hidden: tuple[int, ...] = param((64, 64), "MLP hidden widths (also the orbit, augmentation "
                                      "and learned_aug models').", low=1, high=COUNT_MAX,
                                      distinct=False)
  cnn_channels: tuple[int, ...] = param((16, 16, 16, 16), "ConvNet channels per 3x3 layer (every "
                                        "cnn_* model and p4).", low=1, high=COUNT_MAX,
                                        distinct=False)
  orbit_samples: int = param(8, "k: sampled group elements per example (orbit_sampled).", low=1,
                             high=COUNT_MAX)
  aug_width_regs: tuple[float, ...] = param((0.05,), "learned_aug: weights of the reward for a "
                                            "wide range; one run per weight.", low=0.0)
  aug_eval_samples: int = param(8, "learned_aug: predictions averaged at evaluation.", low=1,
                                high=COUNT_MAX)
  warmup_steps: int = param(50, "Linear learning-rate warmup, then cosine decay to the cap.", low=0,
                            high=STEPS_MAX)
  val_fraction: float = param(0.1, "Share of the training digits held out for validation.",
                              above=0.0, high=0.5)
  eval_elements: int = param(0, "Random group elements (plus identity) for the invariance "
                             "audit; 0 = every element.", low=0, high=COUNT_MAX)
  eval_examples: int = param(64, "Test examples used for the invariance audit.", low=1,
                             high=COUNT_MAX)
  map_examples: int = param(64, "Test digits placed at every position for the placement maps "
                            "(0 = no maps).", low=0, high=COUNT_MAX)
  jensen_batches: int = param(2, "Test batches (of 32) for the Jensen gap.", low=0,
                              high=COUNT_MAX)
  data_seed: int = param(-1, "Seed of the digit split and placements; -1 = each run's seed.",
                         low=-1, high=SEED_MAX)
  log_every: int = param(500, "Steps between progress lines.", low=1, run_only=True)
  checkpoint_every: int = param(500, "Steps between checkpoints.", low=1, run_only=True)

  @property
  def order(self) -> int:
    return self.canvas ** 2 if self.group == "translations" else 4

  def validate(self):
    self.check_sizes()
    if self.channels == 2:
      config.fail("channels", self.channels, "allowed: 1 (grey) or 3 (colour)")
    if self.group == "translations" and self.canvas < self.object_size:
      config.fail("canvas", self.canvas, f"allowed: >= --object_size={self.object_size}")
    allowed = models.TRANSLATION_MODELS if self.group == "translations" else models.ROTATION_MODELS
    bad = [m for m in self.models if m not in allowed]
    if bad:
      config.fail("models", ",".join(self.models), f"unknown {bad[0]!r} for --group={self.group}; "
                  f"allowed: {', '.join(allowed)}")
    self.steps_of(self.models[0])               # checks --model_steps
    if not self.orbit_samples <= self.order:
      config.fail("orbit_samples", self.orbit_samples,
                  f"allowed: 1..{self.order} (the order of the {self.group} group)")
    downsampled = [m for m in self.models if m in ("cnn_strided", "cnn_aps")]
    factor = 2 ** (len(self.cnn_channels) - 1)
    if downsampled and self.group == "translations" and self.canvas % factor:
      config.fail("canvas", self.canvas, f"allowed: a multiple of {factor} for {downsampled[0]} "
                  "(a stride-2 step after every --cnn_channels layer but the last)")
    if not self.eval_elements <= self.order:
      config.fail("eval_elements", self.eval_elements, f"allowed: 0 (all) .. {self.order}")

  def check_sizes(self, limit_bytes: float | None = None) -> None:
    """Refuse sizes whose float32 tensors cannot fit in memory, one flag at a time, each with a
    lower estimate of what that flag alone makes the study hold (so the line names the culprit)."""
    side = self.canvas if self.group == "translations" else self.object_size
    flag = "canvas" if self.group == "translations" else "object_size"
    image = 4 * side * side * self.channels                        # one example, float32
    # Exact integers (a flag may have hundreds of digits), clipped where a float would overflow.
    check = lambda name, value, nbytes: cli.check_memory(name, value, float(min(nbytes, 10**300)),
                                                         limit_bytes)
    check("object_size", self.object_size, 4 * self.object_size ** 2 * self.channels)
    # The audit, the orbit models and the maps move one example through every group element.
    check(flag, side, image * self.order)
    # Every training image is placed this many times (one image: a lower bound of the set).
    check("placements_per_image", self.placements_per_image, image * self.placements_per_image)
    # (--orbit_samples beyond the group's order is refused on its own, in validate.)
    samples = min(self.orbit_samples, self.order) if "orbit_sampled" in self.models else 1
    check("batch_size", self.batch_size, image * self.batch_size * samples)
    check("aug_eval_samples", self.aug_eval_samples, image * EVAL_BATCH * self.aug_eval_samples)
    # Parameters with their gradients and Adam's two moments (x4), plus one batch's activations.
    widths = (side * side * self.channels, *self.mlp_hidden, 10)
    mlp = sum(a * b for a, b in zip(widths, widths[1:]))
    check("mlp_hidden", ",".join(map(str, self.mlp_hidden)),
          16 * mlp + 4 * self.batch_size * sum(self.mlp_hidden))
    copies = 4 if "p4" in self.models else 1                     # p4: one map per rotation
    chans = (self.channels, *self.cnn_channels)
    conv = sum(9 * a * b * copies for a, b in zip(chans, chans[1:]))
    check("cnn_channels", ",".join(map(str, self.cnn_channels)),
          16 * conv + 4 * self.batch_size * side * side * copies * sum(self.cnn_channels))

  def steps_of(self, model: str) -> int:
    steps = self.steps
    for item in self.model_steps:
      name, _, value = item.partition(":")
      if (name not in models.NAMES or not value.isdigit()
          or not 1 <= int(value) <= STEPS_MAX):
        config.fail("model_steps", item, f"allowed: MODEL:STEPS with MODEL in "
                    f"{', '.join(models.NAMES)} and 1 <= STEPS <= {STEPS_MAX} (a model not in "
                    "--models is ignored)")
      steps = int(value) if name == model else steps
    return steps

  def model_spec(self, num_classes: int = 10) -> models.ModelSpec:
    """The model hyperparameters, from this config (their one home)."""
    return models.ModelSpec(mlp_hidden=self.mlp_hidden, cnn_channels=self.cnn_channels,
                            orbit_samples=self.orbit_samples, canvas=self.canvas,
                            aug_width_reg=self.aug_width_regs[0],
                            aug_eval_samples=self.aug_eval_samples, dtype=self.dtype,
                            num_classes=num_classes)

  def arms(self, num_classes: int = 10) -> list[Arm]:
    """One arm per model; learned_aug gets one per reward weight when several are given."""
    spec, out = self.model_spec(num_classes), []
    for m in self.models:
      if m == "learned_aug" and len(self.aug_width_regs) > 1:
        out += [Arm(f"learned_aug_r{w:g}", m, dataclasses.replace(spec, aug_width_reg=w))
                for w in self.aug_width_regs]
      else:
        out.append(Arm(m, m, spec))
    return out

  def runs(self, num_classes: int = 10) -> list[OrbitRun]:
    """Every run of the study, seed-major (all arms of seed 0 first)."""
    return [OrbitRun(arm, seed) for seed in self.seeds for arm in self.arms(num_classes)]


@dataclasses.dataclass(frozen=True)
class Arm:
  """A trained model of the study: its run name (the model's, or ``learned_aug_r<weight>``), the
  ``invariance.models`` name it builds and that model's hyperparameters."""
  name: str
  model: str
  spec: models.ModelSpec


@dataclasses.dataclass(frozen=True)
class OrbitRun:
  """One row of the study: an arm trained and measured with one seed."""
  arm: Arm
  seed: int

  @property
  def key(self) -> str:
    return row_key(self.arm.name, self.seed)


def row_key(run: str, seed: int) -> str:
  """The workdir's name of a row (``rows/<key>.json``)."""
  return f"{run}_seed{seed}"
