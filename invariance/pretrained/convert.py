"""Checkpoint layouts -> the lab's parameter tree, with strict key accounting.

``openclip_rules`` and ``big_vision_rules`` describe, for every parameter of ``towers.TwoTower``,
which stored array fills it and how (transpose, reshape, a slice of a packed or scanned array).
``convert`` applies the rules and stops with one line when a stored array is missing, left unused
or of the wrong shape, so a wrong-architecture or damaged file cannot load half-way.
"""
from __future__ import annotations

import functools
import types
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from invariance.pretrained import config as config_lib
from invariance.pretrained import towers

Rule = tuple[str, Callable[[np.ndarray], np.ndarray]]   # (stored key, array -> parameter)


class CheckpointMismatch(ValueError):
  """The stored arrays do not fit the architecture (missing, unused or mis-shaped keys)."""


def _listing(items, limit: int = 3) -> str:
  items = list(items)
  head = ", ".join(str(i) for i in items[:limit])
  return f"{len(items)} ({head}{', ...' if len(items) > limit else ''})"


@functools.cache
def param_shapes(config: config_lib.TowerConfig) -> Mapping[tuple, tuple]:
  """Flattened path -> shape of the lab's tree for ``config``, without allocating it (traced once
  per config; read-only, as it is shared between calls)."""
  v, t = config.vision, config.text
  model = towers.TwoTower(config)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, v.image_size, v.image_size, 3)),
                         jnp.zeros((1, t.context_length), jnp.int32)))
  return types.MappingProxyType(
      {k: tuple(s.shape) for k, s in traverse_util.flatten_dict(shapes["params"]).items()})


def _t(a):
  return a.T


def _same(a):
  return a


def _openclip_encoder(prefix: str, dst: tuple, layers: int, width: int) -> dict:
  rules = {}
  for i in range(layers):
    src, blk = f"{prefix}.resblocks.{i}.", dst + (f"block_{i}",)
    for ln in ("ln_1", "ln_2"):
      rules[blk + (ln, "scale")] = (src + ln + ".weight", _same)
      rules[blk + (ln, "bias")] = (src + ln + ".bias", _same)
    for j, name in enumerate(("query", "key", "value")):
      part = slice(j * width, (j + 1) * width)
      rules[blk + ("attn", name, "kernel")] = (src + "attn.in_proj_weight", lambda a, p=part: a[p].T)
      rules[blk + ("attn", name, "bias")] = (src + "attn.in_proj_bias", lambda a, p=part: a[p])
    rules[blk + ("attn", "out", "kernel")] = (src + "attn.out_proj.weight", _t)
    rules[blk + ("attn", "out", "bias")] = (src + "attn.out_proj.bias", _same)
    for fc, name in (("fc1", "c_fc"), ("fc2", "c_proj")):
      rules[blk + ("mlp", fc, "kernel")] = (src + f"mlp.{name}.weight", _t)
      rules[blk + ("mlp", fc, "bias")] = (src + f"mlp.{name}.bias", _same)
  return rules


def openclip_rules(config: config_lib.TowerConfig) -> dict[tuple, Rule]:
  """open_clip's CLIP state dict (``visual.conv1.weight`` ...; the published ``.safetensors``)."""
  if config.family != "clip":
    raise ValueError(f"open_clip .safetensors layout is for the clip family, not {config.family!r}")
  v, t = config.vision, config.text
  rules = {
      ("visual", "patch_embed", "kernel"): ("visual.conv1.weight", lambda a: a.transpose(2, 3, 1, 0)),
      ("visual", "cls"): ("visual.class_embedding", _same),
      ("visual", "pos_embed"): ("visual.positional_embedding", _same),
      ("visual", "proj"): ("visual.proj", _same),
      ("text", "token_embed", "embedding"): ("token_embedding.weight", _same),
      ("text", "pos_embed"): ("positional_embedding", _same),
      ("text", "proj", "kernel"): ("text_projection", _same),
      ("logit_scale",): ("logit_scale", lambda a: a.reshape(())),
  }
  for dst, src in ((("visual", "ln_pre"), "visual.ln_pre"), (("visual", "ln_post"), "visual.ln_post"),
                   (("text", "ln_final"), "ln_final")):
    rules[dst + ("scale",)] = (src + ".weight", _same)
    rules[dst + ("bias",)] = (src + ".bias", _same)
  rules.update(_openclip_encoder("visual.transformer", ("visual", "encoder"), v.layers, v.width))
  rules.update(_openclip_encoder("transformer", ("text", "encoder"), t.layers, t.width))
  return rules


def _bv_attention(src: str, dst: tuple, index) -> dict:
  take = (lambda a: a) if index is None else (lambda a, i=index: a[i])
  rules = {}
  for name in ("query", "key", "value"):
    rules[dst + (name, "kernel")] = (src + f"{name}/kernel",
                                     lambda a, f=take: f(a).reshape(f(a).shape[0], -1))
    rules[dst + (name, "bias")] = (src + f"{name}/bias", lambda a, f=take: f(a).reshape(-1))
  rules[dst + ("out", "kernel")] = (src + "out/kernel", lambda a, f=take: f(a).reshape(-1, f(a).shape[-1]))
  rules[dst + ("out", "bias")] = (src + "out/bias", take)
  return rules


def _bv_mlp_ln(src: str, dst: tuple, lns: Mapping[str, str], index) -> dict:
  take = (lambda a: a) if index is None else (lambda a, i=index: a[i])
  rules = {}
  for mine, theirs in lns.items():
    rules[dst + (mine, "scale")] = (src + f"{theirs}/scale", take)
    rules[dst + (mine, "bias")] = (src + f"{theirs}/bias", take)
  for j in range(2):
    rules[dst + ("mlp", f"fc{j + 1}", "kernel")] = (src + f"MlpBlock_0/Dense_{j}/kernel", take)
    rules[dst + ("mlp", f"fc{j + 1}", "bias")] = (src + f"MlpBlock_0/Dense_{j}/bias", take)
  return rules


def _bv_encoder(prefix: str, dst: tuple, layers: int, scanned: bool) -> dict:
  rules = {}
  for i in range(layers):
    src = f"{prefix}encoderblock/" if scanned else f"{prefix}encoderblock_{i}/"
    index = i if scanned else None
    blk = dst + (f"block_{i}",)
    rules.update(_bv_mlp_ln(src, blk, {"ln_1": "LayerNorm_0", "ln_2": "LayerNorm_1"}, index))
    rules.update(_bv_attention(src + "MultiHeadDotProductAttention_0/", blk + ("attn",), index))
  return rules


def big_vision_rules(config: config_lib.TowerConfig, keys) -> dict[tuple, Rule]:
  """big_vision's SigLIP ``.npz`` (``params/img/...``, ``params/txt/...``, ``t``, ``b``), with the
  encoder blocks stored one by one (``encoderblock_0``) or scanned (``encoderblock``, layer axis 0)."""
  if config.family != "siglip":
    raise ValueError(f"big_vision .npz layout is for the siglip family, not {config.family!r}")
  keys = set(keys)
  root = "params/" if any(k.startswith("params/") for k in keys) else ""
  img, txt = root + "img/", root + "txt/"
  rules = {
      ("visual", "patch_embed", "kernel"): (img + "embedding/kernel", _same),
      ("visual", "patch_embed", "bias"): (img + "embedding/bias", _same),
      ("visual", "pos_embed"): (img + "pos_embedding", lambda a: a.reshape(a.shape[-2:])),
      ("visual", "ln_post", "scale"): (img + "Transformer/encoder_norm/scale", _same),
      ("visual", "ln_post", "bias"): (img + "Transformer/encoder_norm/bias", _same),
      ("visual", "map_head", "probe"): (img + "MAPHead_0/probe", lambda a: a.reshape(-1)),
      ("text", "token_embed", "embedding"): (txt + "Embed_0/embedding", _same),
      ("text", "pos_embed"): (txt + "pos_embedding", lambda a: a.reshape(a.shape[-2:])),
      ("text", "ln_final", "scale"): (txt + "Encoder_0/encoder_norm/scale", _same),
      ("text", "ln_final", "bias"): (txt + "Encoder_0/encoder_norm/bias", _same),
      ("text", "proj", "kernel"): (txt + "head/kernel", _same),
      ("text", "proj", "bias"): (txt + "head/bias", _same),
      ("logit_scale",): (root + "t", lambda a: a.reshape(())),
      ("logit_bias",): (root + "b", lambda a: a.reshape(())),
  }
  head = img + "MAPHead_0/"
  rules.update(_bv_mlp_ln(head, ("visual", "map_head"), {"ln": "LayerNorm_0"}, None))
  rules.update(_bv_attention(head + "MultiHeadDotProductAttention_0/", ("visual", "map_head", "attn"), None))
  for prefix, dst, layers in ((img + "Transformer/", ("visual", "encoder"), config.vision.layers),
                              (txt + "Encoder_0/", ("text", "encoder"), config.text.layers)):
    scanned = f"{prefix}encoderblock/LayerNorm_0/scale" in keys
    rules.update(_bv_encoder(prefix, dst, layers, scanned))
  return rules


def convert(arrays: Mapping[str, np.ndarray], rules: Mapping[tuple, Rule],
            shapes: Mapping[tuple, tuple], dtype=np.float32) -> dict:
  """Fill every parameter of ``shapes`` from ``arrays`` by ``rules``; every stored array must be
  used and every converted array must have its parameter's shape, else ``CheckpointMismatch``."""
  if set(rules) != set(shapes):
    raise AssertionError(f"rules and parameters differ: {_listing(set(rules) ^ set(shapes))}")
  wanted = {src for src, _ in rules.values()}
  missing = sorted(wanted - set(arrays))
  unused = sorted(set(arrays) - wanted)
  problems = []
  if missing:
    problems.append(f"missing keys {_listing(missing)}")
  if unused:
    problems.append(f"unused keys {_listing(unused)}")
  flat, misshaped = {}, []
  if not missing:
    for path, (src, fn) in rules.items():
      try:
        value = np.asarray(fn(np.asarray(arrays[src])), dtype=dtype)
      except (ValueError, IndexError, TypeError):
        value = None
      if value is None or value.shape != shapes[path]:
        got = np.shape(arrays[src])
        misshaped.append(f"{src} {got} for {'/'.join(path)} {shapes[path]}")
      else:
        flat[path] = value
  if misshaped:
    problems.append(f"mis-shaped keys {_listing(sorted(set(misshaped)), 2)}")
  if problems:
    raise CheckpointMismatch("; ".join(problems))
  return traverse_util.unflatten_dict(flat)
