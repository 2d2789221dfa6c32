"""Classification losses (the contrastive ones are in ``invariance.contrastive``)."""
from __future__ import annotations

import jax.numpy as jnp
import optax


def cross_entropy(logits_NK, labels_N, mask_N=None):
  """Mean softmax cross-entropy of integer labels; with ``mask_N``, over the masked rows only
  (0 when none is)."""
  losses_N = optax.softmax_cross_entropy_with_integer_labels(logits_NK, labels_N)
  if mask_N is None:
    return losses_N.mean()
  mask_N = mask_N.astype(losses_N.dtype)
  return (losses_N * mask_N).sum() / jnp.maximum(mask_N.sum(), 1.0)
