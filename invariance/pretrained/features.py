"""Per-layer features of a pretrained image tower, batched: what the probes read.

``layer_features`` returns, for every block ``i``, ``block{i}_cls`` (the class token; CLIP only),
``block{i}_mean`` (the mean patch token) and, when object centres are given, ``block{i}_box`` (the
patch token whose patch covers the object's centre), then ``pre_projection`` and ``embedding``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from invariance import evaluate
from invariance.pretrained import towers


def patch_index(centres_N2, grid: int) -> np.ndarray:
  """Row-major index of the patch (of a ``grid x grid`` grid) holding each centre (fractions)."""
  rc = np.clip(np.floor(np.asarray(centres_N2, np.float64) * grid), 0, grid - 1).astype(np.int32)
  return rc[:, 0] * grid + rc[:, 1]


def layer_names(config, boxes: bool) -> list[str]:
  kinds = (["cls"] if config.class_token else []) + ["mean"] + (["box"] if boxes else [])
  return [f"block{i}_{k}" for i in range(config.vision.layers) for k in kinds] + [
      "pre_projection", "embedding"]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _features(config, dtype, params, images_NHWC, patch_N):
  model = towers.TwoTower(config, dtype=dtype)
  out = model.apply({"params": params}, images_NHWC, True, method=model.encode_image)
  blocks = out["blocks"]
  grid_LNGGW = blocks["patch_grid"]
  layers, n = grid_LNGGW.shape[:2]
  tokens_LNPW = grid_LNGGW.reshape(layers, n, -1, grid_LNGGW.shape[-1])
  box_LNW = jnp.take_along_axis(tokens_LNPW, patch_N[None, :, None, None], axis=2)[:, :, 0]
  feats = {"pre_projection": out["pre_projection"], "embedding": out["embedding"]}
  feats = {k: v.astype(jnp.float32) for k, v in feats.items()}
  for i in range(layers):
    if "class_token" in blocks:
      feats[f"block{i}_cls"] = blocks["class_token"][i].astype(jnp.float32)
    feats[f"block{i}_mean"] = blocks["patch_mean"][i].astype(jnp.float32)
    feats[f"block{i}_box"] = box_LNW[i].astype(jnp.float32)
  return feats


def layer_features(model: towers.TwoTower, params, images_NHWC, centres_N2=None,
                   batch: int = 32) -> dict[str, np.ndarray]:
  """Features of every layer (see module docstring) of ``images_NHWC`` (already prepared for the
  tower: ``towers.prepare_images``), in batches of ``batch``."""
  cfg = model.config
  n = len(images_NHWC)
  patch = (patch_index(centres_N2, cfg.vision.grid) if centres_N2 is not None
           else np.zeros(n, np.int32))
  feats = evaluate.batched_apply(lambda xp: _features(cfg, model.dtype, params, *xp),
                                 (np.asarray(images_NHWC, np.float32), patch), min(batch, n))
  keep = layer_names(cfg, centres_N2 is not None)
  return {k: feats[k] for k in keep}
