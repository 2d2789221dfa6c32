"""CLIP over a ring of devices (``lax.ppermute``): never the (B/D) x B logits, (B/D)^2 per step."""
from __future__ import annotations

from typing import Hashable

import chex
import jax
import jax.numpy as jnp
from jax import lax

from invariance.contrastive import common


def clip_loss_chunked(img_emb_ND: jax.Array, txt_emb_ND: jax.Array, log_scale: jax.Array,
                      axis_name: Hashable) -> jax.Array:
  """CLIP over a ring: same value and gradients as ``clip_loss``, (B/D)^2 logits per device.

  Step k = 0 .. D-1: device d holds the text block of device (d - k) mod D together with that
  block's running column logsumexp (max and sum of exp over the images seen so far), scores it
  against its own images (one (B/D) x (B/D) block, rematerialised in the backward pass by
  ``jax.checkpoint``), updates its own rows' running logsumexp and the block's column one, and
  passes block and column statistics on to device d + 1 (``lax.ppermute``). After D steps every
  block is back home with its columns' logsumexp over all B images: the text -> image terms of
  this device's texts. Every running max starts at the matched logit, which is an entry of its
  row and of its column, so it is never above the true max and needs no -inf.
  """
  common.check_pair(img_emb_ND, txt_emb_ND)
  chex.assert_shape(log_scale, ())
  scale = common.clip_logit_scale(log_scale)
  n_dev = lax.axis_size(axis_name)
  ring = [(d, (d + 1) % n_dev) for d in range(n_dev)]
  matched_n = common.matched_logits(img_emb_ND, txt_emb_ND, scale)
  start_n = lax.stop_gradient(matched_n)
  zero_n = 0.0 * start_n  # zeros that vary across devices (shard_map types the scan carry)

  @jax.checkpoint
  def visit(txt_nD, col_max_n, col_sum_n, row_max_n, row_sum_n):
    logits_nxn = common.pairwise_logits(img_emb_ND, txt_nD, scale)
    row_max_n, row_sum_n = common.online_logsumexp(row_max_n, row_sum_n, logits_nxn, axis=1)
    col_max_n, col_sum_n = common.online_logsumexp(col_max_n, col_sum_n, logits_nxn, axis=0)
    return col_max_n, col_sum_n, row_max_n, row_sum_n

  def step(carry, _):
    txt_nD, col_max_n, col_sum_n, row_max_n, row_sum_n = carry
    col_max_n, col_sum_n, row_max_n, row_sum_n = visit(*carry)
    travelling = lax.ppermute((txt_nD, col_max_n, col_sum_n), axis_name, perm=ring)
    return (*travelling, row_max_n, row_sum_n), None

  carry = (txt_emb_ND, start_n, zero_n, start_n, zero_n)
  (_, col_max_n, col_sum_n, row_max_n, row_sum_n), _ = lax.scan(step, carry, None, length=n_dev)
  partial = (jnp.sum(row_max_n + jnp.log(row_sum_n)) + jnp.sum(col_max_n + jnp.log(col_sum_n)) -
             2 * jnp.sum(matched_n))
  return common.global_mean(partial, img_emb_ND.shape[0], axis_name) / 2
