"""CLIP on one device with a hand-written backward pass: one exp pass over the B x B logits serves
both directions and the backward pass (``jax.custom_vjp``)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax import lax

from invariance.contrastive import common


# The smallest exponent of a column sum the shared-exp path accepts: below it (only possible when
# the logit spread exceeds ~44, i.e. a logit scale > ~22 for unit embeddings) terms lost to float32
# underflow (each < 2^-126, at most B of them) could matter, and the exact path is taken instead.
_MIN_COLUMN_SUM = 2.0 ** -64


def _fused_forward(img_emb_ND, txt_emb_ND, scale):
  """Loss and residuals of ``_clip_fused_core``: one B x B product and one exp pass over it.

  E = exp(L - rowmax) gives the image -> text logsumexp (row sums, each >= 1). The text -> image
  column sums reuse it: sum_i exp(L_ij - M) = (E^T w)_j with w_i = exp(rowmax_i - M), M the
  global max, a matrix-vector product instead of a second B x B exp. If a column sum falls below
  ``_MIN_COLUMN_SUM`` the column logsumexps are recomputed exactly (``lax.cond``; that branch
  recomputes the logits, so that E can overwrite them, and is never wrong).
  """
  logits_NN = common.pairwise_logits(img_emb_ND, txt_emb_ND, scale)
  rowmax_N = jnp.max(logits_NN, axis=1)
  exp_NN = jnp.exp(logits_NN - rowmax_N[:, None])
  row_lse_N = rowmax_N + jnp.log(jnp.sum(exp_NN, axis=1))
  # The barrier keeps XLA from turning max(rowmax) into one more pass over the logits.
  globalmax = jnp.max(lax.optimization_barrier(rowmax_N))
  # w^T E rather than E^T w: XLA:CPU copies a transposed E for the latter (10x slower here).
  colsum_N = jnp.exp(rowmax_N - globalmax) @ exp_NN
  exact = jnp.any(colsum_N < _MIN_COLUMN_SUM)
  col_lse_N = lax.cond(
      exact,
      lambda: jax.nn.logsumexp(common.pairwise_logits(img_emb_ND, txt_emb_ND, scale), axis=0),
      lambda: globalmax + jnp.log(colsum_N))
  n = img_emb_ND.shape[0]
  loss = (jnp.sum(row_lse_N) + jnp.sum(col_lse_N) -
          2 * jnp.sum(common.matched_logits(img_emb_ND, txt_emb_ND, scale))) / (2 * n)
  return loss, (img_emb_ND, txt_emb_ND, scale, exp_NN, rowmax_N, row_lse_N, col_lse_N, exact)


@jax.custom_vjp
def _clip_fused_core(img_emb_ND, txt_emb_ND, scale):
  """``clip_loss`` (single device) as a function of the scale: see ``clip_loss_fused``."""
  return _fused_forward(img_emb_ND, txt_emb_ND, scale)[0]


def _fused_backward(residuals, g):
  """dloss/dL = S - 2c I with S = c (softmax_row + softmax_col), c = g / (2B), from the stored E.

  softmax_row_ij = E_ij exp(rowmax_i - row_lse_i); softmax_col_ij = E_ij exp(rowmax_i - col_lse_j)
  = E_ij exp(rowmax_i - M) exp(M - col_lse_j), an outer product of two B-vectors (both factors
  <= 2^64 when no column sum underflowed): S is one pass over E, no new exp. The identity is never
  built: S @ txt - 2c txt and img^T S - 2c img^T. Then G = dL @ txt gives d_img = scale G and
  d_scale = sum(img * G); d_txt = scale dL^T @ img: two B x B x D products, no logits. The exact
  branch (a column sum underflowed) recomputes the logits for softmax_col.
  """
  img_emb_ND, txt_emb_ND, scale, exp_NN, rowmax_N, row_lse_N, col_lse_N, exact = residuals
  n = img_emb_ND.shape[0]
  coef = g / (2 * n)
  row_N = coef * jnp.exp(rowmax_N - row_lse_N)

  def products(s_NN):
    """``S @ txt`` and ``(img^T S)^T``, both as plain (row-contracting) dots: XLA:CPU runs a dot
    whose left operand contracts its rows ~1.5x slower (8192 x 8192 x 256 here), so img^T is laid
    out explicitly and the barriers keep the transposes from being folded back into the dot."""
    s_txt_ND = jnp.einsum("ij,jd->id", s_NN, txt_emb_ND, preferred_element_type=jnp.float32)
    img_DN = lax.optimization_barrier(img_emb_ND.T)
    s_img_DN = jnp.einsum("di,ij->dj", img_DN, s_NN, preferred_element_type=jnp.float32)
    return s_txt_ND, lax.optimization_barrier(s_img_DN).T

  def shared():
    globalmax = jnp.max(rowmax_N)
    col_N = jnp.exp(globalmax - col_lse_N)
    w_N = coef * jnp.exp(rowmax_N - globalmax)
    return products(exp_NN * (row_N[:, None] + w_N[:, None] * col_N))

  def recomputed():
    logits_NN = common.pairwise_logits(img_emb_ND, txt_emb_ND, scale)
    return products(exp_NN * row_N[:, None] + coef * jnp.exp(logits_NN - col_lse_N))

  s_txt_ND, s_img_ND = lax.cond(exact, recomputed, shared)
  g_ND = s_txt_ND - (2 * coef) * txt_emb_ND
  d_txt_ND = scale * (s_img_ND - (2 * coef) * img_emb_ND)
  d_scale = jnp.sum(img_emb_ND * g_ND)
  return ((scale * g_ND).astype(img_emb_ND.dtype), d_txt_ND.astype(txt_emb_ND.dtype),
          d_scale.astype(jnp.result_type(scale)))


_clip_fused_core.defvjp(_fused_forward, _fused_backward)


def clip_loss_fused(img_emb_ND: jax.Array, txt_emb_ND: jax.Array,
                    log_scale: jax.Array) -> jax.Array:
  """``clip_loss(img, txt, log_scale)`` on one device, same value and gradients, less work.

  Autodiff of ``clip_loss`` takes two exp passes over the B x B logits (one per direction) and
  more in the backward pass; here one exp pass serves both directions and the backward pass reuses
  it (``jax.custom_vjp``): three B x B x D products, a few passes over one B x B buffer. The scale
  ``exp(log_scale)`` stays outside the custom rule, so its gradient is autodiff's.
  """
  common.check_pair(img_emb_ND, txt_emb_ND)
  chex.assert_shape(log_scale, ())
  return _clip_fused_core(img_emb_ND, txt_emb_ND, common.clip_logit_scale(log_scale))
