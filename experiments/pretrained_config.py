"""The pretrained-model study's config: every parameter declared once (``experiments.config``); the
absl flags of ``python -m experiments.pretrained`` are generated from it."""
from __future__ import annotations

import dataclasses
import json
import os

from experiments import cli
from experiments import config
from invariance.pretrained import config as tower_config

DASHCAM = "dashcam"
RANDOM = "random"
RECOVERY_METHODS = ("lpft", "lastblock", "finetune")
DEFAULT_TEMPLATES = ("a photo of a {} traffic light.", "a {} traffic light.",
                     "a traffic light showing {}.", "a dashcam photo of a {} light.")

param = config.param


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """One ``--checkpoints`` entry: ``name`` (as the results call it), its architecture config and
  weights file (``None``: random init)."""
  name: str
  arch: str
  tower: tower_config.TowerConfig
  path: str | None


def parse_checkpoint(spec: str) -> Checkpoint:
  """``ARCH=PATH`` or ``ARCH=random``; ARCH is a known name or a tower-config JSON file."""
  if "=" not in spec:
    config.fail("checkpoints", spec, "allowed: ARCH=PATH or ARCH=random (ARCH one of "
                f"{', '.join(sorted(tower_config.KNOWN))}, or a tower-config .json)")
  arch, path = spec.split("=", 1)
  if arch.endswith(".json"):
    if not os.path.isfile(arch):
      config.fail("checkpoints", spec, f"no such architecture file {arch}")
    try:
      with open(arch) as f:
        tower = tower_config.from_dict(json.load(f))
    except (ValueError, TypeError, KeyError) as e:
      config.fail("checkpoints", spec, f"{arch} is not a tower config ({e})")
    arch_name = os.path.splitext(os.path.basename(arch))[0].removesuffix("_config")
  elif arch in tower_config.KNOWN:
    tower, arch_name = tower_config.KNOWN[arch], arch
  else:
    config.fail("checkpoints", spec, f"unknown architecture {arch!r}; allowed: "
                f"{', '.join(sorted(tower_config.KNOWN))}, or a tower-config .json")
  if path == RANDOM:
    return Checkpoint(f"{arch_name}_random", arch_name, tower, None)
  if not os.path.isfile(path):
    config.fail("checkpoints", spec, f"no such weights file {path}; allowed: an open_clip "
                ".safetensors or big_vision .npz file, or 'random'")
  stem = os.path.splitext(os.path.basename(path))[0]
  return Checkpoint(f"{arch_name}_{stem}", arch_name, tower, path)


@dataclasses.dataclass(frozen=True)
class PretrainedConfig(config.StudyConfig):
  seeds: tuple[int, ...] = param((0, 1, 2, 3, 4), "Label draws: each seed draws the n training "
                                 "labels of every label-curve point (intervals are over draws).",
                                 low=0, high=2**32 - 1)
  checkpoints: tuple[str, ...] = param(
      ("ViT-B-32=random",), "Towers to measure, each ARCH=PATH (an open_clip .safetensors for CLIP "
      "names, a big_vision .npz for SigLIP names) or ARCH=random; ARCH is a known architecture or "
      "a tower-config .json. The same architecture at random init is added as the lower "
      "reference of every checkpoint.")
  tokenizer: str = param("", "Tokenizer file for zero-shot: CLIP's bpe_simple_vocab_16e6.txt.gz "
                         "(default: the one of an installed open_clip) or SigLIP's SentencePiece "
                         "model; zero-shot is skipped (and says so) without one.")
  dataset: str = param(DASHCAM, "dashcam (the lab's scenes rendered at --frame_size, boxes and "
                       "light colour known), or a TFDS dataset NAME[/CONFIG][:VERSION]: image "
                       "classification (--label_key) or detection (--box_key, one example per "
                       "box).")
  label_key: str = param("label", "TFDS: the label feature (a '/' path; the per-box label with "
                         "--box_key).")
  box_key: str = param("", "TFDS detection: the boxes feature, e.g. objects/bbox ('' = an image "
                       "classification dataset).")
  train_split: str = param("train", "TFDS split the probes are fit on.")
  test_split: str = param("test", "TFDS split the probes are scored on.")
  attribute: str = param("light", "dashcam: the attribute probed (its box is the object).",
                         choices=("light", "car_color", "pedestrian"))
  lamp_sizes: tuple[int, ...] = param((2, 4, 6), "dashcam: lamp sides in pixels of the rendered "
                                      "frame, in equal shares of the scenes (distant and near "
                                      "lights; the size strata).", low=2, high=6, sort=True)
  frame_size: int = param(224, "dashcam: frame side rendered; TFDS detection: frames resized to "
                          "this square.", low=32, high=1024)
  num_train: int = param(300, "Training examples (the first ones of the train split).", low=2)
  num_test: int = param(150, "Test examples (the first ones of the test split).", low=2)
  contexts: tuple[float, ...] = param(
      (0.0, 3.0, 1.0), "Views with boxes: 0 = the whole frame resized to the tower (a distant "
      "object shrinks to a few pixels), s >= 1 = a square crop s times the box's longer side "
      "(1 = tight).", low=0, distinct=True)
  greyscale: bool = param(True, "Also every view in greyscale (colour vs which lamp is lit).")
  label_sizes: tuple[int, ...] = param((8, 32, 128, 100000), "Label-curve points: training labels "
                                       "per probe (capped at --num_train).", low=2, sort=True)
  class_names: tuple[str, ...] = param((), "Zero-shot class names in label order (default: the "
                                       "dataset's label names).", allow_empty=True)
  templates: tuple[str, ...] = param(DEFAULT_TEMPLATES, "Zero-shot prompt templates, each with "
                                     "one {}; the ensemble is their mean embedding.")
  size_strata: int = param(3, "Object-size strata (quantiles of the test boxes' areas) for the "
                           "whole-frame view; 1 = none.", low=1, high=10)
  audit_examples: int = param(60, "Test examples the invariance audit uses (0 = no audit).",
                              low=0)
  audit_shifts: tuple[float, ...] = param((1.0, 0.5), "Audit: translations in patches (1 = a "
                                          "whole patch), each cyclic and non-wrapping, down "
                                          "and right.", above=0)
  placement_grid: int = param(4, "Placement map: the object (tight crop) pasted at grid x grid "
                              "positions of a grey canvas (0 = none).", low=0, high=16)
  placement_scale: float = param(0.25, "Placement map: object side as a fraction of the canvas.",
                                 above=0, high=1)
  recovery: tuple[str, ...] = param((), "Post-hoc tuning of the tower on the labels (whole-frame "
                                    "or first view): lpft, lastblock, finetune (GPU recommended).",
                                    choices=RECOVERY_METHODS, allow_empty=True)
  recovery_steps: int = param(200, "Tuning steps per method.", low=1, high=2**31 - 1)
  recovery_learning_rate: float = param(1e-5, "Tuning Adam learning rate (constant).", above=0,
                                        high=1)
  recovery_batch_size: int = param(32, "Tuning batch size.", low=1)
  dtype: str = param("float32", "The towers' computation dtype (parameters stay float32); "
                     "bfloat16 moves embeddings by about 1% relative on the test fixtures.",
                     choices=("float32", "bfloat16"))
  batch_size: int = param(32, "Images per forward pass (memory only).", low=1, high=1 << 20,
                          run_only=True)

  @property
  def towers(self) -> list[Checkpoint]:
    """The checkpoints, each preceded by its architecture at random init (once per arch)."""
    out, seen = [], set()
    for spec in self.checkpoints:
      ckpt = parse_checkpoint(spec)
      if ckpt.arch not in seen:
        seen.add(ckpt.arch)
        out.append(Checkpoint(f"{ckpt.arch}_random", ckpt.arch, ckpt.tower, None))
      if ckpt.path is not None:
        out.append(ckpt)
    return out

  @property
  def views(self) -> list[tuple[str, float, bool]]:
    """``(name, context, grey)`` of every view; without boxes only the whole frame."""
    contexts = self.contexts if self.has_boxes else (0.0,)
    out = []
    for grey in (False, True) if self.greyscale else (False,):
      for c in contexts:
        name = "frame" if c == 0 else ("tight" if c == 1 else f"context{c:g}")
        out.append((name + ("_grey" if grey else ""), float(c), grey))
    return out

  @property
  def has_boxes(self) -> bool:
    return self.dataset == DASHCAM or bool(self.box_key)

  def validate(self):
    if not self.checkpoints:
      config.fail("checkpoints", "", "allowed: at least one ARCH=PATH or ARCH=random")
    names = [c.name for c in self.towers]
    if len(set(names)) != len(names):
      config.fail("checkpoints", ",".join(self.checkpoints), "two checkpoints share a name "
                  "(architecture and file stem); allowed: distinct files")
    for t in self.templates:
      if t.count("{}") != 1:
        config.fail("templates", t, "allowed: templates with exactly one {}")
    if self.tokenizer and not os.path.isfile(self.tokenizer):
      config.fail("tokenizer", self.tokenizer, "no such file; allowed: a BPE .txt.gz or a "
                  "SentencePiece .model, or '' (zero-shot skipped)")
    if self.recovery and self.recovery_batch_size > self.num_train:
      config.fail("recovery_batch_size", self.recovery_batch_size,
                  f"allowed: <= --num_train={self.num_train}")
    if self.audit_examples > self.num_test:
      config.fail("audit_examples", self.audit_examples, f"allowed: <= --num_test={self.num_test}")
    # every frame is held in memory as float32, and each view makes a copy at the same size
    for flag, n in (("num_train", self.num_train), ("num_test", self.num_test)):
      cli.check_memory(flag, n, 2 * (self.num_train + self.num_test) * self.frame_size ** 2 * 3 * 4)
    if self.dataset == DASHCAM and self.frame_size < 32:
      config.fail("frame_size", self.frame_size, "allowed: >= 32 for dashcam scenes")


config.define_flags(PretrainedConfig)
