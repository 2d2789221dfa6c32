"""Strict key accounting of the checkpoint loaders, and one-line errors for files that do not fit."""
import json
import os
import shutil

import numpy as np
import pytest
from flax import traverse_util

from invariance.pretrained import checkpoint
from invariance.pretrained import config as config_lib
from invariance.pretrained import convert

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "pretrained")


def vit_b_32_layout():
  with open(os.path.join(FIXTURES, "vit_b_32_layout.json")) as f:
    return {k: tuple(v) for k, v in json.load(f).items()}


def zeros_like_layout(layout):
  """Arrays of the layout's shapes that hold no memory (one zero broadcast)."""
  return {k: np.broadcast_to(np.float32(0), shape) for k, shape in layout.items()}


def test_full_size_vit_b_32_layout_converts_to_the_lab_tree():
  layout = vit_b_32_layout()
  assert len(layout) == 302
  cfg = config_lib.get_config("ViT-B-32")
  shapes = convert.param_shapes(cfg)
  params = convert.convert(zeros_like_layout(layout), convert.openclip_rules(cfg), shapes)
  flat = traverse_util.flatten_dict(params)
  assert {k: v.shape for k, v in flat.items()} == shapes
  # every stored number lands in exactly one parameter (q/k/v are a three-way split of one array)
  assert sum(int(np.prod(s)) for s in layout.values()) == sum(int(np.prod(s)) for s in shapes.values())
  assert sum(int(np.prod(s)) for s in shapes.values()) == 151_277_313


def _mismatch(arrays, arch):
  cfg = config_lib.get_config(arch)
  with pytest.raises(convert.CheckpointMismatch) as e:
    convert.convert(arrays, convert.openclip_rules(cfg), convert.param_shapes(cfg))
  assert "\n" not in str(e.value)
  return str(e.value)


def test_missing_unused_and_misshaped_keys_are_named():
  layout = vit_b_32_layout()
  arrays = zeros_like_layout(layout)
  del arrays["visual.proj"]
  assert _mismatch(arrays, "ViT-B-32") == "missing keys 1 (visual.proj)"
  arrays = zeros_like_layout(layout)
  arrays["visual.extra"] = np.zeros(3)
  assert _mismatch(arrays, "ViT-B-32") == "unused keys 1 (visual.extra)"
  message = _mismatch(zeros_like_layout(layout), "ViT-B-16")       # patch 32 weights, patch 16 tower
  assert message.startswith("mis-shaped keys 2 (visual.conv1.weight (768, 3, 32, 32) for "
                            "visual/patch_embed/kernel (16, 16, 3, 768)")


def test_known_architectures_have_rules_for_every_parameter():
  for name in ("ViT-L-14-336-quickgelu", "ViT-B-16-SigLIP-384", "ViT-SO400M-14-SigLIP"):
    cfg = config_lib.get_config(name)
    shapes = convert.param_shapes(cfg)
    keys = {"params/b"}
    rules = (convert.openclip_rules(cfg) if cfg.family == "clip" else convert.big_vision_rules(cfg, keys))
    assert set(rules) == set(shapes), name


@pytest.mark.parametrize("file,arch,match", [
    ("siglip.npz", "ViT-B-32", r"does not fit ViT-B-32: missing keys 302 \(ln_final.bias, "),
    ("clip_gelu.safetensors", "ViT-B-32", r"does not fit ViT-B-32: missing keys 240 \(transformer"),
    ("clip_gelu.safetensors", "ViT-B-16-SigLIP", r"does not fit ViT-B-16-SigLIP: missing keys"),
])
def test_wrong_architecture_is_one_line(file, arch, match):
  with pytest.raises(ValueError, match=match) as e:
    checkpoint.load(os.path.join(FIXTURES, file), arch)
  assert "\n" not in str(e.value) and file in str(e.value)


@pytest.mark.parametrize("file", ["clip_gelu.safetensors", "siglip.npz"])
def test_truncated_file_is_one_line(tmp_path, file):
  src = os.path.join(FIXTURES, file)
  cut = tmp_path / file
  with open(src, "rb") as f:
    cut.write_bytes(f.read()[: os.path.getsize(src) // 2])
  cfg = config_lib.from_dict(json.load(open(os.path.join(FIXTURES, file.split(".")[0] + "_config.json"))))
  with pytest.raises(ValueError, match="cannot be read") as e:
    checkpoint.load(str(cut), cfg)
  assert "\n" not in str(e.value) and str(cut) in str(e.value)


def test_unknown_architecture_missing_file_and_format(tmp_path):
  with pytest.raises(ValueError, match=r"unknown architecture 'ViT-Q-99': allowed ViT-B-16, "):
    checkpoint.load(os.path.join(FIXTURES, "siglip.npz"), "ViT-Q-99")
  with pytest.raises(ValueError, match="no such file"):
    checkpoint.load(str(tmp_path / "absent.safetensors"), "ViT-B-32")
  other = tmp_path / "weights.pt"
  shutil.copy(os.path.join(FIXTURES, "siglip.npz"), other)
  with pytest.raises(ValueError, match=r"unknown format, allowed \.safetensors, \.npz"):
    checkpoint.load(str(other), "ViT-B-32")
