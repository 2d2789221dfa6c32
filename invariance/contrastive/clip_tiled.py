"""CLIP on one device without the B x B logits: a scan over column tiles, online row logsumexp,
and a ``jax.custom_vjp`` that recomputes each tile in the backward pass."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from jax import lax

from invariance.contrastive import common
from invariance.contrastive import tiles


def _clip_tiled_forward(img_emb_ND, txt_emb_ND, scale, tile):
  """``sum_i logsumexp(row i) + sum_j logsumexp(column j)`` of the B x B logits, one B x tile block
  at a time: the rows' logsumexp accumulated online (running max and rescaled sum), each block's
  columns complete (a block holds every row of its columns). The residuals keep every max and sum
  of exp apart (2B + 2B numbers): the backward pass takes its softmax as exp(L - max) / sum, whose
  exponent is exact near the max, not as exp(L - logsumexp), which at a logit scale of 300 loses
  ~1e-5 to the rounding of the logsumexp."""
  txt_JTD, valid_JT = tiles.column_tiles(txt_emb_ND, tile)
  scaled_img_ND = scale * img_emb_ND

  def body(carry, tile_xs):
    row_max_N, row_sum_N = carry
    txt_TD, valid_T = tile_xs
    logits_NT = tiles.tile_logits(scaled_img_ND, txt_TD, valid_T)
    new_max_N = jnp.maximum(row_max_N, jnp.max(logits_NT, axis=1))
    row_sum_N = (row_sum_N * jnp.exp(row_max_N - new_max_N) +
                 jnp.sum(jnp.exp(logits_NT - new_max_N[:, None]), axis=1))
    col_max_T = jnp.max(logits_NT, axis=0)
    if valid_T is not None:  # padded columns (all -inf): max 0, sum of exp 1, so logsumexp 0
      col_max_T = jnp.where(valid_T, col_max_T, 0.0)
    col_sum_T = jnp.sum(jnp.exp(logits_NT - col_max_T[None, :]), axis=0)
    if valid_T is not None:
      col_sum_T = jnp.where(valid_T, col_sum_T, 1.0)
    return (new_max_N, row_sum_N), (col_max_T, col_sum_T)

  batch = img_emb_ND.shape[0]
  start = (jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), jnp.float32))
  (row_max_N, row_sum_N), (col_max_JT, col_sum_JT) = lax.scan(body, start,
                                                                (txt_JTD, valid_JT))
  lse_sum = (jnp.sum(row_max_N + jnp.log(row_sum_N)) +
             jnp.sum(col_max_JT + jnp.log(col_sum_JT)))
  return lse_sum, (img_emb_ND, txt_emb_ND, scale, row_max_N, row_sum_N, col_max_JT,
                   col_sum_JT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _clip_tiled_core(img_emb_ND, txt_emb_ND, scale, tile):
  """The rows' and columns' logsumexp summed (see ``_clip_tiled_forward``), with a backward pass
  that recomputes each block instead of storing it."""
  return _clip_tiled_forward(img_emb_ND, txt_emb_ND, scale, tile)[0]


def _clip_tiled_backward(tile, residuals, g):
  """Per block: dsum/dL = softmax_row + softmax_col = exp(L - row_max_i) / row_sum_i +
  exp(L - col_max_j) / col_sum_j, from the recomputed logits and the stored statistics. G = sum
  over blocks of dL @ txt_block gives d_img = scale G and d_scale = sum(img * G); each block's
  d_txt = scale dL^T @ img is a scan output."""
  img_emb_ND, txt_emb_ND, scale, row_max_N, row_sum_N, col_max_JT, col_sum_JT = residuals
  txt_JTD, valid_JT = tiles.column_tiles(txt_emb_ND, tile)
  scaled_img_ND = scale * img_emb_ND
  img_DN = tiles.transposed(img_emb_ND)
  row_coef_N = g / row_sum_N

  def body(g_ND, tile_xs):
    txt_TD, valid_T, col_max_T, col_sum_T = tile_xs
    logits_NT = tiles.tile_logits(scaled_img_ND, txt_TD, valid_T)
    d_logits_NT = (jnp.exp(logits_NT - row_max_N[:, None]) * row_coef_N[:, None] +
                    jnp.exp(logits_NT - col_max_T[None, :]) * (g / col_sum_T)[None, :])
    return tiles.tile_products(g_ND, d_logits_NT, txt_TD, img_DN)

  g_ND, d_txt_JDT = lax.scan(body, jnp.zeros(img_emb_ND.shape, jnp.float32),
                                (txt_JTD, valid_JT, col_max_JT, col_sum_JT))
  d_txt_ND = scale * tiles.untile_transposed(d_txt_JDT, img_emb_ND.shape[0])
  d_scale = jnp.sum(img_emb_ND * g_ND)
  return ((scale * g_ND).astype(img_emb_ND.dtype), d_txt_ND.astype(txt_emb_ND.dtype),
          d_scale.astype(jnp.result_type(scale)))


_clip_tiled_core.defvjp(_clip_tiled_forward, _clip_tiled_backward)


def clip_loss_tiled(img_emb_ND: jax.Array, txt_emb_ND: jax.Array, log_scale: jax.Array,
                    tile: int = tiles.DEFAULT_TILE) -> jax.Array:
  """``clip_loss(img, txt, log_scale)`` on one device without the B x B logits.

  A ``lax.scan`` over ceil(B / tile) column blocks of B x tile logits (rows' logsumexp online,
  columns' per block); a ``jax.custom_vjp`` recomputes each block in the backward pass. Temporaries
  are a few B x tile blocks plus O(B D), against the B x B logits (and their cotangent) of
  ``clip_loss``; the price is one more B x B x D product (8 B^2 D FLOPs forward + backward instead
  of 6). B need not be a multiple of ``tile``: the last block is padded and its padding masked;
  ``tile`` > B means a single block.
  """
  common.check_pair(img_emb_ND, txt_emb_ND)
  chex.assert_shape(log_scale, ())
  batch = img_emb_ND.shape[0]
  tile = min(tiles.check_tile(tile), batch)
  scale = common.clip_logit_scale(log_scale)
  lse_sum = _clip_tiled_core(img_emb_ND, txt_emb_ND, scale, tile)
  return (lse_sum - 2 * jnp.sum(common.matched_logits(img_emb_ND, txt_emb_ND, scale))) / (2 * batch)
