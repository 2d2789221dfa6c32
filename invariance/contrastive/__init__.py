"""CLIP and SigLIP losses: single device, per device (``axis_name``), rings and tiles.

One file per implementation: ``clip`` / ``siglip`` (materialised logits, one device or per device),
``clip_ring`` / ``siglip_ring``, ``clip_tiled`` / ``siglip_tiled`` (over ``tiles``), ``clip_fused``,
``multi_positive``, ``selection`` (``loss_by_name``), and ``common`` (what they share). This package
exports the public names of all of them.

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
from invariance.contrastive.clip import clip_loss
from invariance.contrastive.clip_fused import clip_loss_fused
from invariance.contrastive.clip_ring import clip_loss_chunked
from invariance.contrastive.clip_tiled import clip_loss_tiled
from invariance.contrastive.common import (CLIP_INIT_TEMPERATURE, CLIP_MAX_LOG_SCALE,
                                           CLIP_MAX_LOGIT_SCALE, SIGLIP_INIT_BIAS,
                                           SIGLIP_INIT_T_PRIME, clip_log_scale_clamp,
                                           clip_logit_scale, init_clip_temperature,
                                           init_siglip_params, l2_normalize, matched_logits,
                                           pairwise_logits)
from invariance.contrastive.multi_positive import (clip_loss_multi_positive, same_rows,
                                                   siglip_loss_multi_positive)
from invariance.contrastive.selection import LOSS_NAMES, TILED_THRESHOLD, loss_by_name
from invariance.contrastive.siglip import siglip_loss
from invariance.contrastive.siglip_ring import siglip_loss_chunked
from invariance.contrastive.siglip_tiled import siglip_loss_tiled
from invariance.contrastive.tiles import DEFAULT_TILE
