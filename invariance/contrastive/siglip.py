"""SigLIP's pairwise sigmoid loss with materialised logits, on one device or per device
(``axis_name``), and the softplus block sums the ring and tiled variants share."""
from __future__ import annotations

from typing import Hashable, Optional

import chex
import jax
import jax.numpy as jnp

from invariance.contrastive import common


# -log sigmoid(z x) is softplus(x) for a negative pair (z = -1) and softplus(x) - x for a positive
# one, so the loss is a sum of softplus over every block of pairs minus the sum of the matched
# logits: no B x B label mask is built (XLA would materialise it next to the logits).
def softplus_block_sum(img_nD: jax.Array, txt_cD: jax.Array, t_prime: jax.Array,
                       bias: jax.Array) -> jax.Array:
  """``sum softplus(logits)`` over one block of pairs, as if all of them were negatives."""
  return jnp.sum(jax.nn.softplus(common.pairwise_logits(img_nD, txt_cD, jnp.exp(t_prime), bias)))


def siglip_positives(img_nD, txt_nD, t_prime, bias) -> jax.Array:
  """Correction for the matching pairs (the rows this device holds): ``-sum matched logits``."""
  return -jnp.sum(common.matched_logits(img_nD, txt_nD, jnp.exp(t_prime), bias))


def check_siglip(img_emb_ND, txt_emb_ND, t_prime, bias) -> None:
  common.check_pair(img_emb_ND, txt_emb_ND)
  chex.assert_shape([t_prime, bias], ())


def siglip_loss(img_emb_ND: jax.Array, txt_emb_ND: jax.Array, t_prime: jax.Array,
                bias: jax.Array, axis_name: Optional[Hashable] = None) -> jax.Array:
  """Pairwise sigmoid loss (SigLIP): sum over all B^2 pairs divided by the global batch size B.

  With ``axis_name``: local images against all (gathered) texts; each pair is counted once.
  """
  check_siglip(img_emb_ND, txt_emb_ND, t_prime, bias)
  all_txt_ND = common.gather(txt_emb_ND, axis_name)
  partial = (softplus_block_sum(img_emb_ND, all_txt_ND, t_prime, bias) +
             siglip_positives(img_emb_ND, txt_emb_ND, t_prime, bias))
  return common.global_mean(partial, img_emb_ND.shape[0], axis_name)
