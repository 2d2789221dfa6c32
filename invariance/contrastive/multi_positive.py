"""CLIP and SigLIP with several positives per row: pairs whose captions are identical
(``same_rows``) are positives, not negatives. One device, materialised logits."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from invariance.contrastive import common
from invariance.contrastive import siglip


def same_rows(tokens_NL: jax.Array) -> jax.Array:
  """Boolean N x N: captions i and j are identical (the same token ids)."""
  chex.assert_rank(tokens_NL, 2)
  return jnp.all(tokens_NL[:, None, :] == tokens_NL[None, :, :], axis=-1)


def clip_loss_multi_positive(img_emb_ND: jax.Array, txt_emb_ND: jax.Array,
                             log_scale: jax.Array, positives_NN: jax.Array) -> jax.Array:
  """CLIP where pair (i, j) is a positive wherever ``positives_NN[i, j]`` (e.g. ``same_rows`` of
  the captions: a duplicate caption is not a negative): each direction's cross-entropy has the
  uniform distribution over the row's (column's) positives as its target. Equals ``clip_loss``
  when ``positives`` is the identity. One device, materialised logits."""
  common.check_pair(img_emb_ND, txt_emb_ND)
  chex.assert_shape([log_scale, positives_NN], [(), (img_emb_ND.shape[0],) * 2])
  logits_NN = common.pairwise_logits(img_emb_ND, txt_emb_ND, common.clip_logit_scale(log_scale))
  pos = positives_NN.astype(jnp.float32)

  def soft_ce(logits, targets):
    targets = targets / jnp.sum(targets, axis=-1, keepdims=True)
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))

  return (soft_ce(logits_NN, pos) + soft_ce(logits_NN.T, pos.T)) / 2


def siglip_loss_multi_positive(img_emb_ND: jax.Array, txt_emb_ND: jax.Array,
                               t_prime: jax.Array, bias: jax.Array,
                               positives_NN: jax.Array) -> jax.Array:
  """SigLIP with label +1 wherever ``positives_NN[i, j]`` (not only on the diagonal), -1
  elsewhere; equals ``siglip_loss`` when ``positives`` is the identity. One device."""
  siglip.check_siglip(img_emb_ND, txt_emb_ND, t_prime, bias)
  chex.assert_shape(positives_NN, (img_emb_ND.shape[0],) * 2)
  logits_NN = common.pairwise_logits(img_emb_ND, txt_emb_ND, jnp.exp(t_prime), bias)
  z_NN = jnp.where(positives_NN, 1.0, -1.0)
  return -jnp.sum(jax.nn.log_sigmoid(z_NN * logits_NN)) / img_emb_ND.shape[0]
