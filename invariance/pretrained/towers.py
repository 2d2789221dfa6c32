"""Real CLIP (open_clip ViT family) and SigLIP (big_vision) towers as linen modules.

``VisionTower`` maps ``images_NHWC`` (already resized and normalised, see ``prepare_images``) to a
dict: ``embedding`` (``[N, E]``, not normalised), ``pre_projection`` (``[N, W]``: CLIP's
``ln_post`` class token, SigLIP's MAP output, the feature the CLIP paper's linear probes use) and,
with ``blocks=True``, every block's ``class_token`` (CLIP only), ``patch_mean`` and ``patch_grid``
(``[L, N, g, g, W]``, each block's raw residual stream). ``TextTower`` maps token ids ``[N, T]`` to
``embedding`` and ``pooled`` (the pooled token before the projection). ``TwoTower`` holds both plus
``logit_scale`` (and SigLIP's ``logit_bias``).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invariance.pretrained import config as config_lib
from invariance.pretrained import layers

# Pixel statistics the towers were trained with (images in [0, 1] are mapped by (x - mean) / std).
PIXEL_MEAN = {"clip": (0.48145466, 0.4578275, 0.40821073), "siglip": (0.5, 0.5, 0.5)}
PIXEL_STD = {"clip": (0.26862954, 0.26130258, 0.27577711), "siglip": (0.5, 0.5, 0.5)}


class VisionTower(nn.Module):
  config: config_lib.TowerConfig
  dtype: Any = None

  @nn.compact
  def __call__(self, images_NHWC, blocks: bool = False):
    cfg, vis = self.config, self.config.vision
    if images_NHWC.shape[1:] != (vis.image_size, vis.image_size, 3):
      raise ValueError(f"images of shape {images_NHWC.shape[1:]} given; this tower takes "
                       f"({vis.image_size}, {vis.image_size}, 3)")
    clip = cfg.family == "clip"
    x = nn.Conv(vis.width, (vis.patch_size,) * 2, strides=(vis.patch_size,) * 2, padding="VALID",
                use_bias=not clip, dtype=self.dtype, name="patch_embed")(images_NHWC)
    n, g = x.shape[0], vis.grid
    x_NTW = x.reshape(n, g * g, vis.width)
    prefix = 1 if clip else 0
    if clip:
      cls_W = self.param("cls", nn.initializers.normal(0.02), (vis.width,))
      x_NTW = jnp.concatenate([jnp.broadcast_to(cls_W.astype(x_NTW.dtype), (n, 1, vis.width)), x_NTW], 1)
    pos_TW = self.param("pos_embed", nn.initializers.normal(0.02), (g * g + prefix, vis.width))
    x_NTW = x_NTW + pos_TW.astype(x_NTW.dtype)
    if clip:
      x_NTW = layers.layer_norm(cfg.ln_eps, self.dtype, "ln_pre")(x_NTW)
    x_NTW, outs = layers.Encoder(vis.heads, vis.mlp_dim, cfg.activation, cfg.ln_eps, self.dtype,
                                 layers=vis.layers, name="encoder")(x_NTW)
    x_NTW = layers.layer_norm(cfg.ln_eps, self.dtype, "ln_post")(x_NTW)
    if clip:
      pooled_NW = x_NTW[:, 0]
      proj_WE = self.param("proj", nn.initializers.normal(vis.width ** -0.5), (vis.width, cfg.embed_dim))
      embedding_NE = pooled_NW @ proj_WE.astype(pooled_NW.dtype)
    else:
      pooled_NW = layers.MAPHead(vis.heads, vis.mlp_dim, cfg.activation, cfg.ln_eps, self.dtype,
                                 name="map_head")(x_NTW)
      embedding_NE = pooled_NW
    out = {"embedding": embedding_NE, "pre_projection": pooled_NW}
    if blocks:
      stacked_LNTW = jnp.stack(outs)
      patches = stacked_LNTW[:, :, prefix:]
      out["blocks"] = {"patch_mean": patches.mean(2),
                       "patch_grid": patches.reshape(vis.layers, n, g, g, vis.width)}
      if clip:
        out["blocks"]["class_token"] = stacked_LNTW[:, :, 0]
    return out


class TextTower(nn.Module):
  config: config_lib.TowerConfig
  dtype: Any = None

  @nn.compact
  def __call__(self, tokens_NT, blocks: bool = False):
    cfg, txt = self.config, self.config.text
    if tokens_NT.ndim != 2 or tokens_NT.shape[1] > txt.context_length:
      raise ValueError(f"token ids of shape {tokens_NT.shape} given; this tower takes "
                       f"[N, T] with T <= {txt.context_length}")
    t = tokens_NT.shape[1]
    clip = cfg.family == "clip"
    x_NTW = nn.Embed(txt.vocab_size, txt.width, dtype=self.dtype, name="token_embed")(tokens_NT)
    pos_TW = self.param("pos_embed", nn.initializers.normal(0.01), (txt.context_length, txt.width))
    x_NTW = x_NTW + pos_TW[:t].astype(x_NTW.dtype)
    mask_TT = jnp.tril(jnp.ones((t, t), bool)) if clip else None
    x_NTW, outs = layers.Encoder(txt.heads, txt.mlp_dim, cfg.activation, cfg.ln_eps, self.dtype,
                                 layers=txt.layers, name="encoder")(x_NTW, mask_TT)
    x_NTW = layers.layer_norm(cfg.ln_eps, self.dtype, "ln_final")(x_NTW)
    # CLIP pools at the end-of-text token, the largest id of each row; SigLIP at the last position.
    index_N = jnp.argmax(tokens_NT, axis=-1) if clip else jnp.full(tokens_NT.shape[:1], t - 1)
    pooled_NW = jnp.take_along_axis(x_NTW, index_N[:, None, None], axis=1)[:, 0]
    embedding_NE = nn.Dense(cfg.embed_dim, use_bias=not clip, dtype=self.dtype, name="proj")(pooled_NW)
    out = {"embedding": embedding_NE, "pooled": pooled_NW}
    if blocks:
      out["blocks"] = {"tokens": jnp.stack(outs)}
    return out


class TwoTower(nn.Module):
  """Image and text towers with the contrastive scale (and SigLIP's bias)."""
  config: config_lib.TowerConfig
  dtype: Any = None

  def setup(self):
    self.visual = VisionTower(self.config, self.dtype)
    self.text = TextTower(self.config, self.dtype)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())
    if self.config.family == "siglip":
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(-10.0), ())

  def encode_image(self, images_NHWC, blocks: bool = False):
    return self.visual(images_NHWC, blocks)

  def encode_text(self, tokens_NT, blocks: bool = False):
    return self.text(tokens_NT, blocks)

  def __call__(self, images_NHWC, tokens_NT):
    """Image-text logits ``[N_images, N_texts]`` as the model's loss sees them."""
    img = normalize(self.visual(images_NHWC)["embedding"])
    txt = normalize(self.text(tokens_NT)["embedding"])
    logits = jnp.exp(self.logit_scale) * img @ txt.T
    if self.config.family == "siglip":
      logits = logits + self.logit_bias
    return logits


def normalize(x_ND):
  return x_ND / jnp.linalg.norm(x_ND, axis=-1, keepdims=True)


def prepare_images(images_NHWC, config: config_lib.TowerConfig):
  """Images in [0, 1] (any square size) -> the tower's size (bicubic) and pixel statistics."""
  size = config.vision.image_size
  images_NHWC = jnp.asarray(images_NHWC, jnp.float32)
  if images_NHWC.shape[1:3] != (size, size):
    images_NHWC = jax.image.resize(images_NHWC, (images_NHWC.shape[0], size, size, 3), "bicubic")
  mean = jnp.asarray(PIXEL_MEAN[config.family])
  std = jnp.asarray(PIXEL_STD[config.family])
  return (images_NHWC - mean) / std
