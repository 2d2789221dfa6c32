"""CLIP's symmetric InfoNCE loss with materialised logits, on one device or per device
(``axis_name``: local images against all gathered texts, column logsumexp reduce-scattered)."""
from __future__ import annotations

from typing import Hashable, Optional

import chex
import jax
import jax.numpy as jnp
from jax import lax

from invariance.contrastive import common


def _column_logsumexp(logits_nN: jax.Array, axis_name: Optional[Hashable]) -> jax.Array:
  """logsumexp down the columns of the global B x B logits, for this device's columns only.

  Each device holds B/D rows; the column sums of exp are reduce-scattered, so device d gets its
  own B/D columns (its own texts), shifted by the global column max for stability.
  """
  if axis_name is None:
    return jax.nn.logsumexp(logits_nN, axis=0)
  n_local = logits_nN.shape[0]
  max_N = lax.pmax(lax.stop_gradient(jnp.max(logits_nN, axis=0)), axis_name)  # a constant shift
  sum_n = lax.psum_scatter(jnp.sum(jnp.exp(logits_nN - max_N), axis=0), axis_name, tiled=True)
  max_n = lax.dynamic_slice_in_dim(max_N, lax.axis_index(axis_name) * n_local, n_local)
  return max_n + jnp.log(sum_n)


def clip_loss(img_emb_ND: jax.Array, txt_emb_ND: jax.Array, log_scale: jax.Array,
              axis_name: Optional[Hashable] = None) -> jax.Array:
  """Symmetric InfoNCE (CLIP), mean over the global batch.

  loss = (CE(image -> text) + CE(text -> image)) / 2, each the mean over the B global rows of the
  softmax cross-entropy whose target is the matching pair: ``logsumexp(row) - matched logit`` for
  image i (a row of the B x B logits) and ``logsumexp(column) - matched logit`` for text j.
  With ``axis_name`` the arguments are this device's B/D rows. It scores its images against all
  (gathered) texts: the B/D x B rows of the logits. The image -> text terms of its images are
  local; the text -> image terms of its texts need their columns' logsumexp over every device's
  rows, combined with a ``pmax`` and a ``psum_scatter`` of B numbers. One B/D x B product per
  device, no gather of the images.
  """
  common.check_pair(img_emb_ND, txt_emb_ND)
  chex.assert_shape(log_scale, ())
  scale = common.clip_logit_scale(log_scale)
  logits_nN = common.pairwise_logits(img_emb_ND, common.gather(txt_emb_ND, axis_name), scale)
  partial = (jnp.sum(jax.nn.logsumexp(logits_nN, axis=-1)) +
             jnp.sum(_column_logsumexp(logits_nN, axis_name)) -
             2 * jnp.sum(common.matched_logits(img_emb_ND, txt_emb_ND, scale)))
  return common.global_mean(partial, img_emb_ND.shape[0], axis_name) / 2
