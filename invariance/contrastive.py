"""CLIP and SigLIP losses: single device, per device (``axis_name``), rings and tiles.

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

Rings (per device, ``axis_name`` required): ``siglip_loss_chunked`` and ``clip_loss_chunked`` never
materialise the (B/D) x B logits: each device keeps its image block and text blocks travel around
the ring with ``lax.ppermute``; each (B/D) x (B/D) block is rematerialised in the backward pass
(``jax.checkpoint``). CLIP's column logsumexp travels with its text block (online max and sum).

Tiles (one device): ``clip_loss_tiled`` and ``siglip_loss_tiled`` never materialise the B x B
logits: a ``lax.scan`` over column blocks of B x ``tile`` logits (CLIP: rows' logsumexp online,
columns' per block) and a ``jax.custom_vjp`` that recomputes each block in the backward pass.
Temporaries O(B tile + B D) instead of O(B^2), for one more B x B x D product (8 B^2 D FLOPs
forward + backward instead of 6).

Choosing by batch size: ``loss_by_name(name, batch_size, tiled_threshold=TILED_THRESHOLD,
tile=DEFAULT_TILE, axis_name=None)`` returns ``fn(img, txt, *scalars)``: the plain loss below
the threshold, the tiled one (no ``axis_name``) or the ring (with one) from it on.

Conventions: logits are computed in float32; the CLIP logit scale is ``exp(log_scale)``, not
clamped inside any loss (a clamp there zeroes the gradient of ``log_scale`` for good once it
passes log 100): the training loop projects the parameter after each update with
``clip_log_scale_clamp`` (``min(log_scale, CLIP_MAX_LOG_SCALE = log 100)``). SigLIP's loss is
``-sum_ij log sigmoid(z_ij (t x_i.y_j + b)) / B`` with z = +1 on the diagonal, -1 elsewhere, as in
Zhai et al. 2023 ("Sigmoid Loss for Language Image Pre-Training").
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Hashable, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CLIP_INIT_TEMPERATURE = 0.07
CLIP_MAX_LOGIT_SCALE = 100.0
CLIP_MAX_LOG_SCALE = math.log(CLIP_MAX_LOGIT_SCALE)
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


def _check_pair(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array) -> None:
  chex.assert_rank(img_emb_NxD, 2)
  chex.assert_equal_shape([img_emb_NxD, txt_emb_NxD])


def _gather(x_nxD: jax.Array, axis_name: Optional[Hashable]) -> jax.Array:
  """All rows of every device, in device order (identity on a single device)."""
  if axis_name is None:
    return x_nxD
  return lax.all_gather(x_nxD, axis_name, tiled=True)


def _global_mean(partial_sum: jax.Array, n_local: int, axis_name: Optional[Hashable]) -> jax.Array:
  """Sum of every device's partial sum, divided by the global batch size."""
  if axis_name is None:
    return partial_sum / n_local
  return lax.psum(partial_sum, axis_name) / (n_local * lax.axis_size(axis_name))


# -- CLIP ---------------------------------------------------------------------------------------
def _column_logsumexp(logits_nxN: jax.Array, axis_name: Optional[Hashable]) -> jax.Array:
  """logsumexp down the columns of the global B x B logits, for this device's columns only.

  Each device holds B/D rows; the column sums of exp are reduce-scattered, so device d gets its
  own B/D columns (its own texts), shifted by the global column max for stability.
  """
  if axis_name is None:
    return jax.nn.logsumexp(logits_nxN, axis=0)
  n_local = logits_nxN.shape[0]
  max_N = lax.pmax(lax.stop_gradient(jnp.max(logits_nxN, axis=0)), axis_name)  # a constant shift
  sum_n = lax.psum_scatter(jnp.sum(jnp.exp(logits_nxN - max_N), axis=0), axis_name, tiled=True)
  max_n = lax.dynamic_slice_in_dim(max_N, lax.axis_index(axis_name) * n_local, n_local)
  return max_n + jnp.log(sum_n)


def clip_loss(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array, log_scale: jax.Array,
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
  _check_pair(img_emb_NxD, txt_emb_NxD)
  chex.assert_shape(log_scale, ())
  scale = clip_logit_scale(log_scale)
  logits_nxN = pairwise_logits(img_emb_NxD, _gather(txt_emb_NxD, axis_name), scale)
  partial = (jnp.sum(jax.nn.logsumexp(logits_nxN, axis=-1)) +
             jnp.sum(_column_logsumexp(logits_nxN, axis_name)) -
             2 * jnp.sum(matched_logits(img_emb_NxD, txt_emb_NxD, scale)))
  return _global_mean(partial, img_emb_NxD.shape[0], axis_name) / 2


# -- CLIP over a ring ---------------------------------------------------------------------------
def _online_logsumexp(max_N: jax.Array, sum_N: jax.Array, logits_NxM: jax.Array,
                      axis: int) -> Tuple[jax.Array, jax.Array]:
  """One step of a running logsumexp ``max + log(sum)`` along ``axis`` of a new block of logits.

  The running max is a constant shift (``stop_gradient``): the logsumexp does not depend on it, so
  autodiff of ``max + log(sum)`` gives the softmax without differentiating any max.
  """
  new_max_N = jnp.maximum(max_N, lax.stop_gradient(jnp.max(logits_NxM, axis=axis)))
  shifted = logits_NxM - (new_max_N[:, None] if axis == 1 else new_max_N[None, :])
  return new_max_N, sum_N * jnp.exp(max_N - new_max_N) + jnp.sum(jnp.exp(shifted), axis=axis)


def clip_loss_chunked(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array, log_scale: jax.Array,
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
  _check_pair(img_emb_NxD, txt_emb_NxD)
  chex.assert_shape(log_scale, ())
  scale = clip_logit_scale(log_scale)
  n_dev = lax.axis_size(axis_name)
  ring = [(d, (d + 1) % n_dev) for d in range(n_dev)]
  matched_n = matched_logits(img_emb_NxD, txt_emb_NxD, scale)
  start_n = lax.stop_gradient(matched_n)
  zero_n = 0.0 * start_n  # zeros that vary across devices (shard_map types the scan carry)

  @jax.checkpoint
  def visit(txt_nxD, col_max_n, col_sum_n, row_max_n, row_sum_n):
    logits_nxn = pairwise_logits(img_emb_NxD, txt_nxD, scale)
    row_max_n, row_sum_n = _online_logsumexp(row_max_n, row_sum_n, logits_nxn, axis=1)
    col_max_n, col_sum_n = _online_logsumexp(col_max_n, col_sum_n, logits_nxn, axis=0)
    return col_max_n, col_sum_n, row_max_n, row_sum_n

  def step(carry, _):
    txt_nxD, col_max_n, col_sum_n, row_max_n, row_sum_n = carry
    col_max_n, col_sum_n, row_max_n, row_sum_n = visit(*carry)
    travelling = lax.ppermute((txt_nxD, col_max_n, col_sum_n), axis_name, perm=ring)
    return (*travelling, row_max_n, row_sum_n), None

  carry = (txt_emb_NxD, start_n, zero_n, start_n, zero_n)
  (_, col_max_n, col_sum_n, row_max_n, row_sum_n), _ = lax.scan(step, carry, None, length=n_dev)
  partial = (jnp.sum(row_max_n + jnp.log(row_sum_n)) + jnp.sum(col_max_n + jnp.log(col_sum_n)) -
             2 * jnp.sum(matched_n))
  return _global_mean(partial, img_emb_NxD.shape[0], axis_name) / 2


# -- CLIP, single device, hand-written backward --------------------------------------------------
# The smallest exponent of a column sum the shared-exp path accepts: below it (only possible when
# the logit spread exceeds ~44, i.e. a logit scale > ~22 for unit embeddings) terms lost to float32
# underflow (each < 2^-126, at most B of them) could matter, and the exact path is taken instead.
_MIN_COLUMN_SUM = 2.0 ** -64


def _fused_forward(img_emb_NxD, txt_emb_NxD, scale):
  """Loss and residuals of ``_clip_fused_core``: one B x B product and one exp pass over it.

  E = exp(L - rowmax) gives the image -> text logsumexp (row sums, each >= 1). The text -> image
  column sums reuse it: sum_i exp(L_ij - M) = (E^T w)_j with w_i = exp(rowmax_i - M), M the
  global max, a matrix-vector product instead of a second B x B exp. If a column sum falls below
  ``_MIN_COLUMN_SUM`` the column logsumexps are recomputed exactly (``lax.cond``; that branch
  recomputes the logits, so that E can overwrite them, and is never wrong).
  """
  logits_NxN = pairwise_logits(img_emb_NxD, txt_emb_NxD, scale)
  rowmax_N = jnp.max(logits_NxN, axis=1)
  exp_NxN = jnp.exp(logits_NxN - rowmax_N[:, None])
  row_lse_N = rowmax_N + jnp.log(jnp.sum(exp_NxN, axis=1))
  # The barrier keeps XLA from turning max(rowmax) into one more pass over the logits.
  globalmax = jnp.max(lax.optimization_barrier(rowmax_N))
  # w^T E rather than E^T w: XLA:CPU copies a transposed E for the latter (10x slower here).
  colsum_N = jnp.exp(rowmax_N - globalmax) @ exp_NxN
  exact = jnp.any(colsum_N < _MIN_COLUMN_SUM)
  col_lse_N = lax.cond(
      exact,
      lambda: jax.nn.logsumexp(pairwise_logits(img_emb_NxD, txt_emb_NxD, scale), axis=0),
      lambda: globalmax + jnp.log(colsum_N))
  n = img_emb_NxD.shape[0]
  loss = (jnp.sum(row_lse_N) + jnp.sum(col_lse_N) -
          2 * jnp.sum(matched_logits(img_emb_NxD, txt_emb_NxD, scale))) / (2 * n)
  return loss, (img_emb_NxD, txt_emb_NxD, scale, exp_NxN, rowmax_N, row_lse_N, col_lse_N, exact)


@jax.custom_vjp
def _clip_fused_core(img_emb_NxD, txt_emb_NxD, scale):
  """``clip_loss`` (single device) as a function of the scale: see ``clip_loss_fused``."""
  return _fused_forward(img_emb_NxD, txt_emb_NxD, scale)[0]


def _fused_backward(residuals, g):
  """dloss/dL = S - 2c I with S = c (softmax_row + softmax_col), c = g / (2B), from the stored E.

  softmax_row_ij = E_ij exp(rowmax_i - row_lse_i); softmax_col_ij = E_ij exp(rowmax_i - col_lse_j)
  = E_ij exp(rowmax_i - M) exp(M - col_lse_j), an outer product of two B-vectors (both factors
  <= 2^64 when no column sum underflowed): S is one pass over E, no new exp. The identity is never
  built: S @ txt - 2c txt and img^T S - 2c img^T. Then G = dL @ txt gives d_img = scale G and
  d_scale = sum(img * G); d_txt = scale dL^T @ img: two B x B x D products, no logits. The exact
  branch (a column sum underflowed) recomputes the logits for softmax_col.
  """
  img_emb_NxD, txt_emb_NxD, scale, exp_NxN, rowmax_N, row_lse_N, col_lse_N, exact = residuals
  n = img_emb_NxD.shape[0]
  coef = g / (2 * n)
  row_N = coef * jnp.exp(rowmax_N - row_lse_N)

  def products(s_NxN):
    """``S @ txt`` and ``(img^T S)^T``, both as plain (row-contracting) dots: XLA:CPU runs a dot
    whose left operand contracts its rows ~1.5x slower (8192 x 8192 x 256 here), so img^T is laid
    out explicitly and the barriers keep the transposes from being folded back into the dot."""
    s_txt_NxD = jnp.einsum("ij,jd->id", s_NxN, txt_emb_NxD, preferred_element_type=jnp.float32)
    img_DxN = lax.optimization_barrier(img_emb_NxD.T)
    s_img_DxN = jnp.einsum("di,ij->dj", img_DxN, s_NxN, preferred_element_type=jnp.float32)
    return s_txt_NxD, lax.optimization_barrier(s_img_DxN).T

  def shared():
    globalmax = jnp.max(rowmax_N)
    col_N = jnp.exp(globalmax - col_lse_N)
    w_N = coef * jnp.exp(rowmax_N - globalmax)
    return products(exp_NxN * (row_N[:, None] + w_N[:, None] * col_N))

  def recomputed():
    logits_NxN = pairwise_logits(img_emb_NxD, txt_emb_NxD, scale)
    return products(exp_NxN * row_N[:, None] + coef * jnp.exp(logits_NxN - col_lse_N))

  s_txt_NxD, s_img_NxD = lax.cond(exact, recomputed, shared)
  g_NxD = s_txt_NxD - (2 * coef) * txt_emb_NxD
  d_txt_NxD = scale * (s_img_NxD - (2 * coef) * img_emb_NxD)
  d_scale = jnp.sum(img_emb_NxD * g_NxD)
  return ((scale * g_NxD).astype(img_emb_NxD.dtype), d_txt_NxD.astype(txt_emb_NxD.dtype),
          d_scale.astype(jnp.result_type(scale)))


_clip_fused_core.defvjp(_fused_forward, _fused_backward)


def clip_loss_fused(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array,
                    log_scale: jax.Array) -> jax.Array:
  """``clip_loss(img, txt, log_scale)`` on one device, same value and gradients, less work.

  Autodiff of ``clip_loss`` takes two exp passes over the B x B logits (one per direction) and
  more in the backward pass; here one exp pass serves both directions and the backward pass reuses
  it (``jax.custom_vjp``): three B x B x D products, a few passes over one B x B buffer. The scale
  ``exp(log_scale)`` stays outside the custom rule, so its gradient is autodiff's.
  """
  _check_pair(img_emb_NxD, txt_emb_NxD)
  chex.assert_shape(log_scale, ())
  return _clip_fused_core(img_emb_NxD, txt_emb_NxD, clip_logit_scale(log_scale))


# -- tiled losses, single device: never the B x B logits ------------------------------------------
DEFAULT_TILE = 1024
TILED_THRESHOLD = 16384


def _check_tile(tile: int) -> int:
  """``tile`` as a positive Python int, or a one-line ``ValueError``."""
  if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
    raise ValueError(f"tile={tile!r}: allowed: a positive int (columns per tile; the batch "
                     f"size need not be a multiple of it).")
  return int(tile)


def _column_tiles(x_NxD: jax.Array, tile: int) -> Tuple[jax.Array, Optional[jax.Array]]:
  """Rows of ``x`` as J = ceil(N / tile) tiles (J x tile x D, the last one padded with zero rows),
  and which rows are real (J x tile booleans; None when N is a multiple of ``tile``)."""
  batch, dim = x_NxD.shape
  pad = -batch % tile
  if not pad:
    return x_NxD.reshape(-1, tile, dim), None
  x_JxTxD = jnp.pad(x_NxD, ((0, pad), (0, 0))).reshape(-1, tile, dim)
  return x_JxTxD, (jnp.arange(batch + pad) < batch).reshape(-1, tile)


def _tile_logits(scaled_a_NxD: jax.Array, b_TxD: jax.Array, valid_T: Optional[jax.Array],
                 bias: jax.Array | float = 0.0) -> jax.Array:
  """One B x T block of logits (``scale`` already applied to ``a``); padded columns are -inf, so
  that they add nothing to any sum of exp, softplus or sigmoid."""
  logits_NxT = jnp.einsum("bd,td->bt", scaled_a_NxD, b_TxD,
                          preferred_element_type=jnp.float32) + bias
  return logits_NxT if valid_T is None else jnp.where(valid_T[None, :], logits_NxT, -jnp.inf)


def _transposed(x_NxD: jax.Array) -> jax.Array:
  """``x.T`` laid out as such (the barrier keeps XLA from folding the transpose into a dot)."""
  return lax.optimization_barrier(x_NxD.T)


def _tile_products(g_NxD: jax.Array, d_logits_NxT: jax.Array, txt_TxD: jax.Array,
                   img_DxN: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """The backward pass's two products with one block's logit cotangent: ``g += dL @ txt_block``
  and this block's ``(dL^T @ img)^T = img^T @ dL`` (D x T). Both are plain row-contracting dots:
  XLA:CPU ran ``dL^T @ img`` (left operand contracting its rows) up to 1.6x slower here
  (B = 8192, tile 1024, D = 256), and the whole CLIP forward + backward ~10% slower."""
  g_NxD = g_NxD + jnp.einsum("bt,td->bd", d_logits_NxT, txt_TxD,
                             preferred_element_type=jnp.float32)
  return g_NxD, jnp.einsum("db,bt->dt", img_DxN, d_logits_NxT, preferred_element_type=jnp.float32)


def _untile_transposed(x_JxDxT: jax.Array, batch: int) -> jax.Array:
  """Per-tile D x T blocks (a scan's stacked outputs) back to the B x D rows they belong to."""
  return jnp.swapaxes(x_JxDxT, 1, 2).reshape(-1, x_JxDxT.shape[1])[:batch]


def _clip_tiled_forward(img_emb_NxD, txt_emb_NxD, scale, tile):
  """``sum_i logsumexp(row i) + sum_j logsumexp(column j)`` of the B x B logits, one B x tile block
  at a time: the rows' logsumexp accumulated online (running max and rescaled sum), each block's
  columns complete (a block holds every row of its columns). The residuals keep every max and sum
  of exp apart (2B + 2B numbers): the backward pass takes its softmax as exp(L - max) / sum, whose
  exponent is exact near the max, not as exp(L - logsumexp), which at a logit scale of 300 loses
  ~1e-5 to the rounding of the logsumexp."""
  txt_JxTxD, valid_JxT = _column_tiles(txt_emb_NxD, tile)
  scaled_img_NxD = scale * img_emb_NxD

  def body(carry, tile_xs):
    row_max_N, row_sum_N = carry
    txt_TxD, valid_T = tile_xs
    logits_NxT = _tile_logits(scaled_img_NxD, txt_TxD, valid_T)
    new_max_N = jnp.maximum(row_max_N, jnp.max(logits_NxT, axis=1))
    row_sum_N = (row_sum_N * jnp.exp(row_max_N - new_max_N) +
                 jnp.sum(jnp.exp(logits_NxT - new_max_N[:, None]), axis=1))
    col_max_T = jnp.max(logits_NxT, axis=0)
    if valid_T is not None:  # padded columns (all -inf): max 0, sum of exp 1, so logsumexp 0
      col_max_T = jnp.where(valid_T, col_max_T, 0.0)
    col_sum_T = jnp.sum(jnp.exp(logits_NxT - col_max_T[None, :]), axis=0)
    if valid_T is not None:
      col_sum_T = jnp.where(valid_T, col_sum_T, 1.0)
    return (new_max_N, row_sum_N), (col_max_T, col_sum_T)

  batch = img_emb_NxD.shape[0]
  start = (jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), jnp.float32))
  (row_max_N, row_sum_N), (col_max_JxT, col_sum_JxT) = lax.scan(body, start,
                                                                (txt_JxTxD, valid_JxT))
  lse_sum = (jnp.sum(row_max_N + jnp.log(row_sum_N)) +
             jnp.sum(col_max_JxT + jnp.log(col_sum_JxT)))
  return lse_sum, (img_emb_NxD, txt_emb_NxD, scale, row_max_N, row_sum_N, col_max_JxT,
                   col_sum_JxT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _clip_tiled_core(img_emb_NxD, txt_emb_NxD, scale, tile):
  """The rows' and columns' logsumexp summed (see ``_clip_tiled_forward``), with a backward pass
  that recomputes each block instead of storing it."""
  return _clip_tiled_forward(img_emb_NxD, txt_emb_NxD, scale, tile)[0]


def _clip_tiled_backward(tile, residuals, g):
  """Per block: dsum/dL = softmax_row + softmax_col = exp(L - row_max_i) / row_sum_i +
  exp(L - col_max_j) / col_sum_j, from the recomputed logits and the stored statistics. G = sum
  over blocks of dL @ txt_block gives d_img = scale G and d_scale = sum(img * G); each block's
  d_txt = scale dL^T @ img is a scan output."""
  img_emb_NxD, txt_emb_NxD, scale, row_max_N, row_sum_N, col_max_JxT, col_sum_JxT = residuals
  txt_JxTxD, valid_JxT = _column_tiles(txt_emb_NxD, tile)
  scaled_img_NxD = scale * img_emb_NxD
  img_DxN = _transposed(img_emb_NxD)
  row_coef_N = g / row_sum_N

  def body(g_NxD, tile_xs):
    txt_TxD, valid_T, col_max_T, col_sum_T = tile_xs
    logits_NxT = _tile_logits(scaled_img_NxD, txt_TxD, valid_T)
    d_logits_NxT = (jnp.exp(logits_NxT - row_max_N[:, None]) * row_coef_N[:, None] +
                    jnp.exp(logits_NxT - col_max_T[None, :]) * (g / col_sum_T)[None, :])
    return _tile_products(g_NxD, d_logits_NxT, txt_TxD, img_DxN)

  g_NxD, d_txt_JxDxT = lax.scan(body, jnp.zeros(img_emb_NxD.shape, jnp.float32),
                                (txt_JxTxD, valid_JxT, col_max_JxT, col_sum_JxT))
  d_txt_NxD = scale * _untile_transposed(d_txt_JxDxT, img_emb_NxD.shape[0])
  d_scale = jnp.sum(img_emb_NxD * g_NxD)
  return ((scale * g_NxD).astype(img_emb_NxD.dtype), d_txt_NxD.astype(txt_emb_NxD.dtype),
          d_scale.astype(jnp.result_type(scale)))


_clip_tiled_core.defvjp(_clip_tiled_forward, _clip_tiled_backward)


def clip_loss_tiled(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array, log_scale: jax.Array,
                    tile: int = DEFAULT_TILE) -> jax.Array:
  """``clip_loss(img, txt, log_scale)`` on one device without the B x B logits.

  A ``lax.scan`` over ceil(B / tile) column blocks of B x tile logits (rows' logsumexp online,
  columns' per block); a ``jax.custom_vjp`` recomputes each block in the backward pass. Temporaries
  are a few B x tile blocks plus O(B D), against the B x B logits (and their cotangent) of
  ``clip_loss``; the price is one more B x B x D product (8 B^2 D FLOPs forward + backward instead
  of 6). B need not be a multiple of ``tile``: the last block is padded and its padding masked;
  ``tile`` > B means a single block.
  """
  _check_pair(img_emb_NxD, txt_emb_NxD)
  chex.assert_shape(log_scale, ())
  batch = img_emb_NxD.shape[0]
  tile = min(_check_tile(tile), batch)
  scale = clip_logit_scale(log_scale)
  lse_sum = _clip_tiled_core(img_emb_NxD, txt_emb_NxD, scale, tile)
  return (lse_sum - 2 * jnp.sum(matched_logits(img_emb_NxD, txt_emb_NxD, scale))) / (2 * batch)


# -- SigLIP -------------------------------------------------------------------------------------
# -log sigmoid(z x) is softplus(x) for a negative pair (z = -1) and softplus(x) - x for a positive
# one, so the loss is a sum of softplus over every block of pairs minus the sum of the matched
# logits: no B x B label mask is built (XLA would materialise it next to the logits).
def _softplus_block_sum(img_nxD: jax.Array, txt_cxD: jax.Array, t_prime: jax.Array,
                        bias: jax.Array) -> jax.Array:
  """``sum softplus(logits)`` over one block of pairs, as if all of them were negatives."""
  return jnp.sum(jax.nn.softplus(pairwise_logits(img_nxD, txt_cxD, jnp.exp(t_prime), bias)))


def _siglip_positives(img_nxD, txt_nxD, t_prime, bias) -> jax.Array:
  """Correction for the matching pairs (the rows this device holds): ``-sum matched logits``."""
  return -jnp.sum(matched_logits(img_nxD, txt_nxD, jnp.exp(t_prime), bias))


def _check_siglip(img_emb_NxD, txt_emb_NxD, t_prime, bias) -> None:
  _check_pair(img_emb_NxD, txt_emb_NxD)
  chex.assert_shape([t_prime, bias], ())


def siglip_loss(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array, t_prime: jax.Array,
                bias: jax.Array, axis_name: Optional[Hashable] = None) -> jax.Array:
  """Pairwise sigmoid loss (SigLIP): sum over all B^2 pairs divided by the global batch size B.

  With ``axis_name``: local images against all (gathered) texts; each pair is counted once.
  """
  _check_siglip(img_emb_NxD, txt_emb_NxD, t_prime, bias)
  all_txt_NxD = _gather(txt_emb_NxD, axis_name)
  partial = (_softplus_block_sum(img_emb_NxD, all_txt_NxD, t_prime, bias) +
             _siglip_positives(img_emb_NxD, txt_emb_NxD, t_prime, bias))
  return _global_mean(partial, img_emb_NxD.shape[0], axis_name)


def siglip_loss_chunked(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array, t_prime: jax.Array,
                        bias: jax.Array, axis_name: Hashable) -> jax.Array:
  """SigLIP over a ring: same value and gradients as ``siglip_loss``, (B/D)^2 logits per device.

  Step k = 0 .. D-1: device d holds the text block of device (d - k) mod D, scores it against its
  own images (one rematerialised block) and passes it on to device d + 1 (``lax.ppermute``). The
  D steps are one ``lax.scan``, so every block reuses the same buffers; the last pass (each block
  back home) is unused, one extra (B/D) x D transfer, paid so that no block is peeled out of the
  scan (a peeled first block got buffers of its own: at B = 32768 on 8 devices, 172 MB of
  temporaries instead of 113 MB).
  """
  _check_siglip(img_emb_NxD, txt_emb_NxD, t_prime, bias)
  n_dev = lax.axis_size(axis_name)
  ring = [(d, (d + 1) % n_dev) for d in range(n_dev)]
  block_sum = jax.checkpoint(
      lambda txt_nxD: _softplus_block_sum(img_emb_NxD, txt_nxD, t_prime, bias))

  def step(carry, _):
    txt_nxD, partial = carry
    partial = partial + block_sum(txt_nxD)
    return (lax.ppermute(txt_nxD, axis_name, perm=ring), partial), None

  partial = _siglip_positives(img_emb_NxD, txt_emb_NxD, t_prime, bias)
  (_, partial), _ = lax.scan(step, (txt_emb_NxD, partial), None, length=n_dev)
  return _global_mean(partial, img_emb_NxD.shape[0], axis_name)


def _siglip_tiled_forward(img_emb_NxD, txt_emb_NxD, scale, bias, tile):
  """``sum softplus(logits)`` over all B^2 pairs, one B x tile block at a time."""
  txt_JxTxD, valid_JxT = _column_tiles(txt_emb_NxD, tile)
  scaled_img_NxD = scale * img_emb_NxD

  def body(total, tile_xs):
    txt_TxD, valid_T = tile_xs
    logits_NxT = _tile_logits(scaled_img_NxD, txt_TxD, valid_T, bias)
    return total + jnp.sum(jax.nn.softplus(logits_NxT)), None

  total, _ = lax.scan(body, jnp.zeros((), jnp.float32), (txt_JxTxD, valid_JxT))
  return total, (img_emb_NxD, txt_emb_NxD, scale, bias)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _siglip_tiled_core(img_emb_NxD, txt_emb_NxD, scale, bias, tile):
  return _siglip_tiled_forward(img_emb_NxD, txt_emb_NxD, scale, bias, tile)[0]


def _siglip_tiled_backward(tile, residuals, g):
  """Per block: dL = g sigmoid(L) from the recomputed logits; G = sum of dL @ txt_block gives
  d_img = scale G and d_scale = sum(img * G); d_bias = sum dL; d_txt per block as a scan output."""
  img_emb_NxD, txt_emb_NxD, scale, bias = residuals
  txt_JxTxD, valid_JxT = _column_tiles(txt_emb_NxD, tile)
  scaled_img_NxD = scale * img_emb_NxD
  img_DxN = _transposed(img_emb_NxD)

  def body(carry, tile_xs):
    g_NxD, d_bias = carry
    txt_TxD, valid_T = tile_xs
    d_logits_NxT = g * jax.nn.sigmoid(_tile_logits(scaled_img_NxD, txt_TxD, valid_T, bias))
    g_NxD, d_txt_DxT = _tile_products(g_NxD, d_logits_NxT, txt_TxD, img_DxN)
    return (g_NxD, d_bias + jnp.sum(d_logits_NxT)), d_txt_DxT

  start = (jnp.zeros(img_emb_NxD.shape, jnp.float32), jnp.zeros((), jnp.float32))
  (g_NxD, d_bias), d_txt_JxDxT = lax.scan(body, start, (txt_JxTxD, valid_JxT))
  d_txt_NxD = scale * _untile_transposed(d_txt_JxDxT, img_emb_NxD.shape[0])
  d_scale = jnp.sum(img_emb_NxD * g_NxD)
  return ((scale * g_NxD).astype(img_emb_NxD.dtype), d_txt_NxD.astype(txt_emb_NxD.dtype),
          d_scale.astype(jnp.result_type(scale)), d_bias.astype(jnp.result_type(bias)))


_siglip_tiled_core.defvjp(_siglip_tiled_forward, _siglip_tiled_backward)


def siglip_loss_tiled(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array, t_prime: jax.Array,
                      bias: jax.Array, tile: int = DEFAULT_TILE) -> jax.Array:
  """``siglip_loss(img, txt, t_prime, bias)`` on one device without the B x B logits: the softplus
  sum over ceil(B / tile) blocks of B x tile logits in a ``lax.scan``, each block recomputed in the
  backward pass (``jax.custom_vjp``). Same conventions as ``clip_loss_tiled``."""
  _check_siglip(img_emb_NxD, txt_emb_NxD, t_prime, bias)
  batch = img_emb_NxD.shape[0]
  tile = min(_check_tile(tile), batch)
  total = _siglip_tiled_core(img_emb_NxD, txt_emb_NxD, jnp.exp(t_prime), bias, tile)
  return (total + _siglip_positives(img_emb_NxD, txt_emb_NxD, t_prime, bias)) / batch


# -- several positives per row (duplicate captions) ---------------------------------------------
def same_rows(tokens_NxL: jax.Array) -> jax.Array:
  """Boolean N x N: captions i and j are identical (the same token ids)."""
  chex.assert_rank(tokens_NxL, 2)
  return jnp.all(tokens_NxL[:, None, :] == tokens_NxL[None, :, :], axis=-1)


def clip_loss_multi_positive(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array,
                             log_scale: jax.Array, positives_NxN: jax.Array) -> jax.Array:
  """CLIP where pair (i, j) is a positive wherever ``positives_NxN[i, j]`` (e.g. ``same_rows`` of
  the captions: a duplicate caption is not a negative): each direction's cross-entropy has the
  uniform distribution over the row's (column's) positives as its target. Equals ``clip_loss``
  when ``positives`` is the identity. One device, materialised logits."""
  _check_pair(img_emb_NxD, txt_emb_NxD)
  chex.assert_shape([log_scale, positives_NxN], [(), (img_emb_NxD.shape[0],) * 2])
  logits_NxN = pairwise_logits(img_emb_NxD, txt_emb_NxD, clip_logit_scale(log_scale))
  pos = positives_NxN.astype(jnp.float32)

  def soft_ce(logits, targets):
    targets = targets / jnp.sum(targets, axis=-1, keepdims=True)
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))

  return (soft_ce(logits_NxN, pos) + soft_ce(logits_NxN.T, pos.T)) / 2


def siglip_loss_multi_positive(img_emb_NxD: jax.Array, txt_emb_NxD: jax.Array,
                               t_prime: jax.Array, bias: jax.Array,
                               positives_NxN: jax.Array) -> jax.Array:
  """SigLIP with label +1 wherever ``positives_NxN[i, j]`` (not only on the diagonal), -1
  elsewhere; equals ``siglip_loss`` when ``positives`` is the identity. One device."""
  _check_siglip(img_emb_NxD, txt_emb_NxD, t_prime, bias)
  chex.assert_shape(positives_NxN, (img_emb_NxD.shape[0],) * 2)
  logits_NxN = pairwise_logits(img_emb_NxD, txt_emb_NxD, jnp.exp(t_prime), bias)
  z_NxN = jnp.where(positives_NxN, 1.0, -1.0)
  return -jnp.sum(jax.nn.log_sigmoid(z_NxN * logits_NxN)) / img_emb_NxD.shape[0]


# -- choosing a loss by batch size ----------------------------------------------------------------
LOSS_NAMES = ("clip", "siglip")


def loss_by_name(name: str, batch_size: int, tiled_threshold: int = TILED_THRESHOLD,
                 tile: int = DEFAULT_TILE,
                 axis_name: Optional[Hashable] = None) -> Callable[..., jax.Array]:
  """The loss ``name`` for a global batch of ``batch_size``, as ``fn(img, txt, *scalars)``.

  Below ``tiled_threshold`` (or with ``tiled_threshold=0``): ``clip_loss`` / ``siglip_loss``
  (with ``axis_name``). From ``tiled_threshold`` on: with ``axis_name=None`` (one device, or a
  jit that XLA partitions) ``clip_loss_tiled`` / ``siglip_loss_tiled`` with ``tile``; per device
  under ``shard_map`` / ``pmap`` the ring, ``clip_loss_chunked`` / ``siglip_loss_chunked``.
  """
  if name not in LOSS_NAMES:
    raise ValueError(f"name={name!r}: allowed: one of {LOSS_NAMES}.")
  for arg, value, least in (("batch_size", batch_size, 1), ("tiled_threshold", tiled_threshold, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise ValueError(f"{arg}={value!r}: allowed: an int >= {least}.")
  tile = _check_tile(tile)
  if not tiled_threshold or batch_size < tiled_threshold:
    plain = clip_loss if name == "clip" else siglip_loss
    return functools.partial(plain, axis_name=axis_name)
  if axis_name is not None:
    ring = clip_loss_chunked if name == "clip" else siglip_loss_chunked
    return functools.partial(ring, axis_name=axis_name)
  return functools.partial(clip_loss_tiled if name == "clip" else siglip_loss_tiled, tile=tile)
