"""SigLIP on one device without the B x B logits: a scan over column tiles and a
``jax.custom_vjp`` that recomputes each tile in the backward pass."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from invariance.contrastive import siglip
from invariance.contrastive import tiles


def _siglip_tiled_forward(img_emb_ND, txt_emb_ND, scale, bias, tile):
  """``sum softplus(logits)`` over all B^2 pairs, one B x tile block at a time."""
  txt_JTD, valid_JT = tiles.column_tiles(txt_emb_ND, tile)
  scaled_img_ND = scale * img_emb_ND

  def body(total, tile_xs):
    txt_TD, valid_T = tile_xs
    logits_NT = tiles.tile_logits(scaled_img_ND, txt_TD, valid_T, bias)
    return total + jnp.sum(jax.nn.softplus(logits_NT)), None

  total, _ = lax.scan(body, jnp.zeros((), jnp.float32), (txt_JTD, valid_JT))
  return total, (img_emb_ND, txt_emb_ND, scale, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _siglip_tiled_core(img_emb_ND, txt_emb_ND, scale, bias, tile):
  return _siglip_tiled_forward(img_emb_ND, txt_emb_ND, scale, bias, tile)[0]


def _siglip_tiled_backward(tile, residuals, g):
  """Per block: dL = g sigmoid(L) from the recomputed logits; G = sum of dL @ txt_block gives
  d_img = scale G and d_scale = sum(img * G); d_bias = sum dL; d_txt per block as a scan output."""
  img_emb_ND, txt_emb_ND, scale, bias = residuals
  txt_JTD, valid_JT = tiles.column_tiles(txt_emb_ND, tile)
  scaled_img_ND = scale * img_emb_ND
  img_DN = tiles.transposed(img_emb_ND)

  def body(carry, tile_xs):
    g_ND, d_bias = carry
    txt_TD, valid_T = tile_xs
    d_logits_NT = g * jax.nn.sigmoid(tiles.tile_logits(scaled_img_ND, txt_TD, valid_T, bias))
    g_ND, d_txt_DT = tiles.tile_products(g_ND, d_logits_NT, txt_TD, img_DN)
    return (g_ND, d_bias + jnp.sum(d_logits_NT)), d_txt_DT

  start = (jnp.zeros(img_emb_ND.shape, jnp.float32), jnp.zeros((), jnp.float32))
  (g_ND, d_bias), d_txt_JDT = lax.scan(body, start, (txt_JTD, valid_JT))
  d_txt_ND = scale * tiles.untile_transposed(d_txt_JDT, img_emb_ND.shape[0])
  d_scale = jnp.sum(img_emb_ND * g_ND)
  return ((scale * g_ND).astype(img_emb_ND.dtype), d_txt_ND.astype(txt_emb_ND.dtype),
          d_scale.astype(jnp.result_type(scale)), d_bias.astype(jnp.result_type(bias)))


_siglip_tiled_core.defvjp(_siglip_tiled_forward, _siglip_tiled_backward)


def siglip_loss_tiled(img_emb_ND: jax.Array, txt_emb_ND: jax.Array, t_prime: jax.Array,
                      bias: jax.Array, tile: int = tiles.DEFAULT_TILE) -> jax.Array:
  """``siglip_loss(img, txt, t_prime, bias)`` on one device without the B x B logits: the softplus
  sum over ceil(B / tile) blocks of B x tile logits in a ``lax.scan``, each block recomputed in the
  backward pass (``jax.custom_vjp``). Same conventions as ``clip_loss_tiled``."""
  siglip.check_siglip(img_emb_ND, txt_emb_ND, t_prime, bias)
  batch = img_emb_ND.shape[0]
  tile = min(tiles.check_tile(tile), batch)
  total = _siglip_tiled_core(img_emb_ND, txt_emb_ND, jnp.exp(t_prime), bias, tile)
  return (total + siglip.siglip_positives(img_emb_ND, txt_emb_ND, t_prime, bias)) / batch
