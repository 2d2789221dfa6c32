"""What every contrastive loss shares: the learnable scalars' initial values and the CLIP clamp,
L2 normalisation, the float32 similarity logits, shape checks, the cross-device gather and mean,
and one step of an online logsumexp."""
from __future__ import annotations

import math
from typing import Hashable, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
from jax import lax


CLIP_INIT_TEMPERATURE = 0.07
CLIP_MAX_LOGIT_SCALE = 100.0
CLIP_MAX_LOG_SCALE = math.log(CLIP_MAX_LOGIT_SCALE)
SIGLIP_INIT_T_PRIME = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0


def init_clip_temperature() -> jax.Array:
  """Initial ``log_scale`` of the CLIP logit scale: log(1 / 0.07)."""
  return jnp.asarray(math.log(1.0 / CLIP_INIT_TEMPERATURE), jnp.float32)


def init_siglip_params() -> Tuple[jax.Array, jax.Array]:
  """Initial SigLIP ``(t_prime, bias)``: t = exp(t') = 10 and b = -10."""
  return (jnp.asarray(SIGLIP_INIT_T_PRIME, jnp.float32),
          jnp.asarray(SIGLIP_INIT_BIAS, jnp.float32))


def clip_logit_scale(log_scale: jax.Array) -> jax.Array:
  """The CLIP logit scale ``exp(log_scale)``, unclamped (the clamp acts on the parameter: see
  ``clip_log_scale_clamp``)."""
  return jnp.exp(log_scale)


def clip_log_scale_clamp(log_scale: jax.Array) -> jax.Array:
  """``min(log_scale, log 100)``: the projection the training loop applies to the ``log_scale``
  parameter after each update, so that the logit scale never exceeds 100.

  Clamping the parameter, not the scale inside the loss, keeps the loss's gradient w.r.t.
  ``log_scale`` alive past log 100: with ``min(exp(log_scale), 100)`` in the loss it is zero there,
  and a parameter that once crossed log 100 (e.g. by Adam's momentum) never comes back.
  """
  return jnp.minimum(log_scale, CLIP_MAX_LOG_SCALE)


def l2_normalize(x_ND: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Rows scaled to unit L2 norm (rows of norm < eps are divided by eps instead)."""
  norm_Nx1 = jnp.linalg.norm(x_ND, axis=-1, keepdims=True)
  return x_ND / jnp.maximum(norm_Nx1, eps)


def pairwise_logits(a_ND: jax.Array, b_MD: jax.Array, scale: jax.Array,
                    bias: jax.Array | float = 0.0) -> jax.Array:
  """``scale * a @ b.T + bias`` in float32: the similarity computation every variant uses.

  The scale multiplies ``a`` (N x D), not the N x M product, so that the backward pass needs no
  N x M buffer besides the logits and their cotangent.
  """
  return jnp.einsum("nd,md->nm", scale * a_ND, b_MD, preferred_element_type=jnp.float32) + bias


def matched_logits(a_ND: jax.Array, b_ND: jax.Array, scale: jax.Array,
                   bias: jax.Array | float = 0.0) -> jax.Array:
  """The diagonal of ``pairwise_logits(a, b, ...)`` (the matching pairs), without the N x N."""
  return jnp.einsum("nd,nd->n", scale * a_ND, b_ND, preferred_element_type=jnp.float32) + bias


def check_pair(img_emb_ND: jax.Array, txt_emb_ND: jax.Array) -> None:
  chex.assert_rank(img_emb_ND, 2)
  chex.assert_equal_shape([img_emb_ND, txt_emb_ND])


def gather(x_nD: jax.Array, axis_name: Optional[Hashable]) -> jax.Array:
  """All rows of every device, in device order (identity on a single device)."""
  if axis_name is None:
    return x_nD
  return lax.all_gather(x_nD, axis_name, tiled=True)


def global_mean(partial_sum: jax.Array, n_local: int, axis_name: Optional[Hashable]) -> jax.Array:
  """Sum of every device's partial sum, divided by the global batch size."""
  if axis_name is None:
    return partial_sum / n_local
  return lax.psum(partial_sum, axis_name) / (n_local * lax.axis_size(axis_name))


def online_logsumexp(max_N: jax.Array, sum_N: jax.Array, logits_NM: jax.Array,
                     axis: int) -> Tuple[jax.Array, jax.Array]:
  """One step of a running logsumexp ``max + log(sum)`` along ``axis`` of a new block of logits.

  The running max is a constant shift (``stop_gradient``): the logsumexp does not depend on it, so
  autodiff of ``max + log(sum)`` gives the softmax without differentiating any max.
  """
  new_max_N = jnp.maximum(max_N, lax.stop_gradient(jnp.max(logits_NM, axis=axis)))
  shifted = logits_NM - (new_max_N[:, None] if axis == 1 else new_max_N[None, :])
  return new_max_N, sum_N * jnp.exp(max_N - new_max_N) + jnp.sum(jnp.exp(shifted), axis=axis)
