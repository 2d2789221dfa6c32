"""CLIP and SigLIP losses: single device, per device (``axis_name``) and a chunked ring.

All losses are pure functions of L2-normalised embeddings (``l2_normalize`` is provided; the caller
normalises) and of their learnable temperature (and bias) parameters, and return a scalar.

Data parallelism. With ``axis_name=None`` the embeddings are the whole batch. With an
``axis_name`` the function runs per device under ``jax.shard_map`` (over a ``("data",)`` mesh) or
``jax.pmap``: each of the D devices holds B/D rows of each modality, gathers the other modality
with ``lax.all_gather(..., tiled=True)`` (differentiable: its transpose is a reduce-scatter), scores
its local rows against all B columns, and ``psum``s its partial sum (CLIP's text -> image direction
also reduces column sums across devices). Every device returns the same number, equal to the
single-device loss over the global batch.

Gradients: under ``shard_map`` the gradient of that global value is the single-device gradient
whether it is taken outside or inside the shard_map (replicated parameters are reduced by the
transpose of the implicit broadcast). ``pmap`` differentiates the sum over devices of each device's
output, i.e. D x loss: ``invariance.parallel.pmap_value_and_grad`` divides that out.

``siglip_loss_chunked`` never materialises the (B/D) x B logits: it keeps the local image block and
passes text blocks around the ring with ``lax.ppermute``; each (B/D) x (B/D) block is rematerialised
in the backward pass (``jax.checkpoint``).

Conventions: logits are computed in float32; the CLIP logit scale is ``min(exp(log_scale), 100)``;
SigLIP's loss is ``-sum_ij log sigmoid(z_ij (t x_i.y_j + b)) / B`` with z = +1 on the diagonal, -1
elsewhere, as in Zhai et al. 2023 ("Sigmoid Loss for Language Image Pre-Training").
"""
from __future__ import annotations

import math
from typing import Hashable, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
from jax import lax

CLIP_INIT_TEMPERATURE = 0.07
CLIP_MAX_LOGIT_SCALE = 100.0
SIGLIP_INIT_T_PRIME = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0


# -- parameters and helpers ---------------------------------------------------------------------
def init_clip_temperature() -> jax.Array:
  """Initial ``log_scale`` of the CLIP logit scale: log(1 / 0.07)."""
  return jnp.asarray(math.log(1.0 / CLIP_INIT_TEMPERATURE), jnp.float32)


def init_siglip_params() -> Tuple[jax.Array, jax.Array]:
  """Initial SigLIP ``(t_prime, bias)``: t = exp(t') = 10 and b = -10."""
  return (jnp.asarray(SIGLIP_INIT_T_PRIME, jnp.float32),
          jnp.asarray(SIGLIP_INIT_BIAS, jnp.float32))


def clip_logit_scale(log_scale: jax.Array) -> jax.Array:
  """``min(exp(log_scale), 100)``: zero gradient once the scale is clamped."""
  return jnp.minimum(jnp.exp(log_scale), CLIP_MAX_LOGIT_SCALE)


def l2_normalize(x_NxD: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Rows scaled to unit L2 norm (rows of norm < eps are divided by eps instead)."""
  norm_Nx1 = jnp.linalg.norm(x_NxD, axis=-1, keepdims=True)
  return x_NxD / jnp.maximum(norm_Nx1, eps)


def pairwise_logits(a_NxD: jax.Array, b_MxD: jax.Array, scale: jax.Array,
                    bias: jax.Array | float = 0.0) -> jax.Array:
  """``scale * a @ b.T + bias`` in float32: the similarity computation every variant uses.

  The scale multiplies ``a`` (N x D), not the N x M product, so that the backward pass needs no
  N x M buffer besides the logits and their cotangent.
  """
  return jnp.einsum("nd,md->nm", scale * a_NxD, b_MxD, preferred_element_type=jnp.float32) + bias


def matched_logits(a_NxD: jax.Array, b_NxD: jax.Array, scale: jax.Array,
                   bias: jax.Array | float = 0.0) -> jax.Array:
  """The diagonal of ``pairwise_logits(a, b, ...)`` (the matching pairs), without the N x N."""
  return jnp.einsum("nd,nd->n", scale * a_NxD, b_NxD, preferred_element_type=jnp.float32) + bias


def _check_pair(img_emb_BxD: jax.Array, txt_emb_BxD: jax.Array) -> None:
  chex.assert_rank(img_emb_BxD, 2)
  chex.assert_equal_shape([img_emb_BxD, txt_emb_BxD])


def _gather(x_bxD: jax.Array, axis_name: Optional[Hashable]) -> jax.Array:
  """All rows of every device, in device order (identity on a single device)."""
  if axis_name is None:
    return x_bxD
  return lax.all_gather(x_bxD, axis_name, tiled=True)


def _global_mean(partial_sum: jax.Array, n_local: int, axis_name: Optional[Hashable]) -> jax.Array:
  """Sum of every device's partial sum, divided by the global batch size."""
  if axis_name is None:
    return partial_sum / n_local
  return lax.psum(partial_sum, axis_name) / (n_local * lax.axis_size(axis_name))


# -- CLIP ---------------------------------------------------------------------------------------
def _column_logsumexp(logits_bxB: jax.Array, axis_name: Optional[Hashable]) -> jax.Array:
  """logsumexp down the columns of the global B x B logits, for this device's columns only.

  Each device holds B/D rows; the column sums of exp are reduce-scattered, so device d gets its
  own B/D columns (its own texts), shifted by the global column max for stability.
  """
  if axis_name is None:
    return jax.nn.logsumexp(logits_bxB, axis=0)
  n_local = logits_bxB.shape[0]
  max_B = lax.pmax(lax.stop_gradient(jnp.max(logits_bxB, axis=0)), axis_name)  # a constant shift
  sum_b = lax.psum_scatter(jnp.sum(jnp.exp(logits_bxB - max_B), axis=0), axis_name, tiled=True)
  max_b = lax.dynamic_slice_in_dim(max_B, lax.axis_index(axis_name) * n_local, n_local)
  return max_b + jnp.log(sum_b)


def clip_loss(img_emb_BxD: jax.Array, txt_emb_BxD: jax.Array, log_scale: jax.Array,
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
  _check_pair(img_emb_BxD, txt_emb_BxD)
  chex.assert_shape(log_scale, ())
  scale = clip_logit_scale(log_scale)
  logits_bxB = pairwise_logits(img_emb_BxD, _gather(txt_emb_BxD, axis_name), scale)
  partial = (jnp.sum(jax.nn.logsumexp(logits_bxB, axis=-1)) +
             jnp.sum(_column_logsumexp(logits_bxB, axis_name)) -
             2 * jnp.sum(matched_logits(img_emb_BxD, txt_emb_BxD, scale)))
  return _global_mean(partial, img_emb_BxD.shape[0], axis_name) / 2


# -- CLIP, single device, hand-written backward --------------------------------------------------
# The smallest exponent of a column sum the shared-exp path accepts: below it (only possible when
# the logit spread exceeds ~44, i.e. a logit scale > ~22 for unit embeddings) terms lost to float32
# underflow (each < 2^-126, at most B of them) could matter, and the exact path is taken instead.
_MIN_COLUMN_SUM = 2.0 ** -64


def _fused_forward(img_emb_BxD, txt_emb_BxD, scale):
  """Loss and residuals of ``_clip_fused_core``: one B x B product and one exp pass over it.

  E = exp(L - rowmax) gives the image -> text logsumexp (row sums, each >= 1). The text -> image
  column sums reuse it: sum_i exp(L_ij - M) = (E^T w)_j with w_i = exp(rowmax_i - M), M the
  global max, a matrix-vector product instead of a second B x B exp. If a column sum falls below
  ``_MIN_COLUMN_SUM`` the column logsumexps are recomputed exactly (``lax.cond``; that branch
  recomputes the logits, so that E can overwrite them, and is never wrong).
  """
  logits_BxB = pairwise_logits(img_emb_BxD, txt_emb_BxD, scale)
  rowmax_B = jnp.max(logits_BxB, axis=1)
  exp_BxB = jnp.exp(logits_BxB - rowmax_B[:, None])
  row_lse_B = rowmax_B + jnp.log(jnp.sum(exp_BxB, axis=1))
  # The barrier keeps XLA from turning max(rowmax) into one more pass over the logits.
  globalmax = jnp.max(lax.optimization_barrier(rowmax_B))
  # w^T E rather than E^T w: XLA:CPU copies a transposed E for the latter (10x slower here).
  colsum_B = jnp.exp(rowmax_B - globalmax) @ exp_BxB
  exact = jnp.any(colsum_B < _MIN_COLUMN_SUM)
  col_lse_B = lax.cond(
      exact,
      lambda: jax.nn.logsumexp(pairwise_logits(img_emb_BxD, txt_emb_BxD, scale), axis=0),
      lambda: globalmax + jnp.log(colsum_B))
  n = img_emb_BxD.shape[0]
  loss = (jnp.sum(row_lse_B) + jnp.sum(col_lse_B) -
          2 * jnp.sum(matched_logits(img_emb_BxD, txt_emb_BxD, scale))) / (2 * n)
  return loss, (img_emb_BxD, txt_emb_BxD, scale, exp_BxB, rowmax_B, row_lse_B, col_lse_B, exact)


@jax.custom_vjp
def _clip_fused_core(img_emb_BxD, txt_emb_BxD, scale):
  """``clip_loss`` (single device) as a function of the clamped scale: see ``clip_loss_fused``."""
  return _fused_forward(img_emb_BxD, txt_emb_BxD, scale)[0]


def _fused_backward(residuals, g):
  """dloss/dL = S - 2c I with S = c (softmax_row + softmax_col), c = g / (2B), from the stored E.

  softmax_row_ij = E_ij exp(rowmax_i - row_lse_i); softmax_col_ij = E_ij exp(rowmax_i - col_lse_j)
  = E_ij exp(rowmax_i - M) exp(M - col_lse_j), an outer product of two B-vectors (both factors
  <= 2^64 when no column sum underflowed): S is one pass over E, no new exp. The identity is never
  built: S @ txt - 2c txt and img^T S - 2c img^T. Then G = dL @ txt gives d_img = scale G and
  d_scale = sum(img * G); d_txt = scale dL^T @ img: two B x B x D products, no logits. The exact
  branch (a column sum underflowed) recomputes the logits for softmax_col.
  """
  img_emb_BxD, txt_emb_BxD, scale, exp_BxB, rowmax_B, row_lse_B, col_lse_B, exact = residuals
  n = img_emb_BxD.shape[0]
  coef = g / (2 * n)
  row_B = coef * jnp.exp(rowmax_B - row_lse_B)

  def products(s_BxB):
    """``S @ txt`` and ``(img^T S)^T``, both as plain (row-contracting) dots: XLA:CPU runs a dot
    whose left operand contracts its rows ~1.5x slower (8192 x 8192 x 256 here), so img^T is laid
    out explicitly and the barriers keep the transposes from being folded back into the dot."""
    s_txt_BxD = jnp.einsum("ij,jd->id", s_BxB, txt_emb_BxD, preferred_element_type=jnp.float32)
    img_DxB = lax.optimization_barrier(img_emb_BxD.T)
    s_img_DxB = jnp.einsum("di,ij->dj", img_DxB, s_BxB, preferred_element_type=jnp.float32)
    return s_txt_BxD, lax.optimization_barrier(s_img_DxB).T

  def shared():
    globalmax = jnp.max(rowmax_B)
    col_B = jnp.exp(globalmax - col_lse_B)
    w_B = coef * jnp.exp(rowmax_B - globalmax)
    return products(exp_BxB * (row_B[:, None] + w_B[:, None] * col_B))

  def recomputed():
    logits_BxB = pairwise_logits(img_emb_BxD, txt_emb_BxD, scale)
    return products(exp_BxB * row_B[:, None] + coef * jnp.exp(logits_BxB - col_lse_B))

  s_txt_BxD, s_img_BxD = lax.cond(exact, recomputed, shared)
  g_BxD = s_txt_BxD - (2 * coef) * txt_emb_BxD
  d_txt_BxD = scale * (s_img_BxD - (2 * coef) * img_emb_BxD)
  d_scale = jnp.sum(img_emb_BxD * g_BxD)
  return ((scale * g_BxD).astype(img_emb_BxD.dtype), d_txt_BxD.astype(txt_emb_BxD.dtype),
          d_scale.astype(jnp.result_type(scale)))


_clip_fused_core.defvjp(_fused_forward, _fused_backward)


def clip_loss_fused(img_emb_BxD: jax.Array, txt_emb_BxD: jax.Array,
                    log_scale: jax.Array) -> jax.Array:
  """``clip_loss(img, txt, log_scale)`` on one device, same value and gradients, less work.

  Autodiff of ``clip_loss`` takes two exp passes over the B x B logits (one per direction) and
  more in the backward pass; here one exp pass serves both directions and the backward pass reuses
  it (``jax.custom_vjp``): three B x B x D products, a few passes over one B x B buffer. The clamp
  ``min(exp(log_scale), 100)`` stays outside the custom rule, so its gradient is autodiff's.
  """
  _check_pair(img_emb_BxD, txt_emb_BxD)
  chex.assert_shape(log_scale, ())
  return _clip_fused_core(img_emb_BxD, txt_emb_BxD, clip_logit_scale(log_scale))


# -- SigLIP -------------------------------------------------------------------------------------
# -log sigmoid(z x) is softplus(x) for a negative pair (z = -1) and softplus(x) - x for a positive
# one, so the loss is a sum of softplus over every block of pairs minus the sum of the matched
# logits: no B x B label mask is built (XLA would materialise it next to the logits).
def _softplus_block_sum(img_bxD: jax.Array, txt_cxD: jax.Array, t_prime: jax.Array,
                        bias: jax.Array) -> jax.Array:
  """``sum softplus(logits)`` over one block of pairs, as if all of them were negatives."""
  return jnp.sum(jax.nn.softplus(pairwise_logits(img_bxD, txt_cxD, jnp.exp(t_prime), bias)))


def _siglip_positives(img_bxD, txt_bxD, t_prime, bias) -> jax.Array:
  """Correction for the matching pairs (the rows this device holds): ``-sum matched logits``."""
  return -jnp.sum(matched_logits(img_bxD, txt_bxD, jnp.exp(t_prime), bias))


def _check_siglip(img_emb_BxD, txt_emb_BxD, t_prime, bias) -> None:
  _check_pair(img_emb_BxD, txt_emb_BxD)
  chex.assert_shape([t_prime, bias], ())


def siglip_loss(img_emb_BxD: jax.Array, txt_emb_BxD: jax.Array, t_prime: jax.Array,
                bias: jax.Array, axis_name: Optional[Hashable] = None) -> jax.Array:
  """Pairwise sigmoid loss (SigLIP): sum over all B^2 pairs divided by the global batch size B.

  With ``axis_name``: local images against all (gathered) texts; each pair is counted once.
  """
  _check_siglip(img_emb_BxD, txt_emb_BxD, t_prime, bias)
  all_txt_BxD = _gather(txt_emb_BxD, axis_name)
  partial = (_softplus_block_sum(img_emb_BxD, all_txt_BxD, t_prime, bias) +
             _siglip_positives(img_emb_BxD, txt_emb_BxD, t_prime, bias))
  return _global_mean(partial, img_emb_BxD.shape[0], axis_name)


def siglip_loss_chunked(img_emb_BxD: jax.Array, txt_emb_BxD: jax.Array, t_prime: jax.Array,
                        bias: jax.Array, axis_name: Hashable) -> jax.Array:
  """SigLIP over a ring: same value and gradients as ``siglip_loss``, (B/D)^2 logits per device.

  Step k = 0 .. D-1: device d holds the text block of device (d - k) mod D, scores it against its
  own images (one rematerialised block) and passes it on to device d + 1 (``lax.ppermute``). The
  D steps are one ``lax.scan``, so every block reuses the same buffers; the last pass (each block
  back home) is unused, one extra (B/D) x D transfer, paid so that no block is peeled out of the
  scan (a peeled first block got buffers of its own: at B = 32768 on 8 devices, 172 MB of
  temporaries instead of 113 MB).
  """
  _check_siglip(img_emb_BxD, txt_emb_BxD, t_prime, bias)
  n_dev = lax.axis_size(axis_name)
  ring = [(d, (d + 1) % n_dev) for d in range(n_dev)]
  block_sum = jax.checkpoint(
      lambda txt_bxD: _softplus_block_sum(img_emb_BxD, txt_bxD, t_prime, bias))

  def step(carry, _):
    txt_bxD, partial = carry
    partial = partial + block_sum(txt_bxD)
    return (lax.ppermute(txt_bxD, axis_name, perm=ring), partial), None

  partial = _siglip_positives(img_emb_BxD, txt_emb_BxD, t_prime, bias)
  (_, partial), _ = lax.scan(step, (txt_emb_BxD, partial), None, length=n_dev)
  return _global_mean(partial, img_emb_BxD.shape[0], axis_name)
