"""Architecture configs of real CLIP / SigLIP towers, and the table of known model names.

Nothing in a checkpoint says which activation or LayerNorm epsilon it was trained with, so both are
explicit fields here and never guessed from the weights. OpenAI, laion400m and MetaCLIP CLIP
weights need ``quick_gelu`` (open_clip's ``-quickgelu`` names); other open_clip CLIP weights use
exact GELU; big_vision's SigLIP uses tanh-approximate GELU and LayerNorm eps 1e-6.
"""
from __future__ import annotations

import dataclasses

ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")
FAMILIES = ("clip", "siglip")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  image_size: int
  patch_size: int
  width: int
  layers: int
  heads: int
  mlp_dim: int

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
  vocab_size: int
  context_length: int
  width: int
  layers: int
  heads: int
  mlp_dim: int


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """Both towers of one model. ``family`` fixes the layout differences:

  clip: patch conv without bias, class token, ``ln_pre``, class-token pooling, ``ln_post``, image
  ``proj`` without bias; causal text attention pooled at the end-of-text token (the largest id),
  text projection without bias; ``logit_scale``.
  siglip: patch conv with bias, no class token, no ``ln_pre``, MAP-head pooling, no image
  projection; text attention without a mask pooled at the last position, text head with bias;
  ``logit_scale`` (big_vision's ``t``) and ``logit_bias`` (``b``).
  """
  family: str
  embed_dim: int
  vision: VisionConfig
  text: TextConfig
  activation: str
  ln_eps: float

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"family={self.family!r}: allowed {', '.join(FAMILIES)}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation={self.activation!r}: allowed {', '.join(ACTIVATIONS)}")
    for name, tower in (("vision", self.vision), ("text", self.text)):
      if tower.width % tower.heads:
        raise ValueError(f"{name} width {tower.width} is not divisible by its {tower.heads} heads")
    if self.vision.image_size % self.vision.patch_size:
      raise ValueError(f"image_size {self.vision.image_size} is not a multiple of patch_size "
                       f"{self.vision.patch_size}")
    if self.family == "siglip" and self.vision.width != self.embed_dim:
      raise ValueError(f"siglip has no image projection: vision width {self.vision.width} must equal "
                       f"embed_dim {self.embed_dim}")

  @property
  def class_token(self) -> bool:
    return self.family == "clip"


def _clip(image_size, patch, width, layers, embed_dim, text_width, text_layers, activation):
  return TowerConfig(
      family="clip", embed_dim=embed_dim, activation=activation, ln_eps=1e-5,
      vision=VisionConfig(image_size, patch, width, layers, width // 64, 4 * width),
      text=TextConfig(49408, 77, text_width, text_layers, text_width // 64, 4 * text_width))


def _siglip(image_size, patch, width, layers, heads, mlp_dim, context_length):
  return TowerConfig(
      family="siglip", embed_dim=width, activation="gelu_tanh", ln_eps=1e-6,
      vision=VisionConfig(image_size, patch, width, layers, heads, mlp_dim),
      text=TextConfig(32000, context_length, width, layers, heads, mlp_dim))


def _known() -> dict[str, TowerConfig]:
  table = {}
  for act, suffix in (("gelu", ""), ("quick_gelu", "-quickgelu")):
    table["ViT-B-32" + suffix] = _clip(224, 32, 768, 12, 512, 512, 12, act)
    table["ViT-B-16" + suffix] = _clip(224, 16, 768, 12, 512, 512, 12, act)
    table["ViT-L-14" + suffix] = _clip(224, 14, 1024, 24, 768, 768, 12, act)
    table["ViT-L-14-336" + suffix] = _clip(336, 14, 1024, 24, 768, 768, 12, act)
  for size in (224, 256, 384):
    name = "ViT-B-16-SigLIP" + ("" if size == 224 else f"-{size}")
    table[name] = _siglip(size, 16, 768, 12, 12, 3072, 64)
  table["ViT-SO400M-14-SigLIP"] = _siglip(224, 14, 1152, 27, 16, 4304, 16)
  return table


KNOWN: dict[str, TowerConfig] = _known()


def get_config(name: str) -> TowerConfig:
  """The architecture of a known model name (open_clip's names); one-line error otherwise."""
  if name not in KNOWN:
    raise ValueError(f"unknown architecture {name!r}: allowed {', '.join(sorted(KNOWN))}")
  return KNOWN[name]


def to_dict(config: TowerConfig) -> dict:
  return dataclasses.asdict(config)


def from_dict(d: dict) -> TowerConfig:
  return TowerConfig(**{**d, "vision": VisionConfig(**d["vision"]), "text": TextConfig(**d["text"])})
