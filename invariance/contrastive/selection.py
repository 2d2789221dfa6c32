"""Choosing a loss implementation by name and global batch size (plain, tiled or ring)."""
from __future__ import annotations

import functools
from typing import Callable, Hashable, Optional

import jax
import numpy as np

from invariance.contrastive import clip
from invariance.contrastive import clip_fused
from invariance.contrastive import clip_ring
from invariance.contrastive import clip_tiled
from invariance.contrastive import siglip
from invariance.contrastive import siglip_ring
from invariance.contrastive import siglip_tiled
from invariance.contrastive import tiles


TILED_THRESHOLD = 16384
LOSS_NAMES = ("clip", "siglip")


def loss_by_name(name: str, batch_size: int, tiled_threshold: int = TILED_THRESHOLD,
                 tile: int = tiles.DEFAULT_TILE,
                 axis_name: Optional[Hashable] = None) -> Callable[..., jax.Array]:
  """The loss ``name`` for a global batch of ``batch_size``, as ``fn(img, txt, *scalars)``.

  Below ``tiled_threshold`` (or with ``tiled_threshold=0``): ``clip_loss`` / ``siglip_loss``
  (with ``axis_name``), except CLIP with ``axis_name=None``: ``clip_loss_fused`` (the same value
  and gradients with one exp pass over the logits and a hand-written backward). From
  ``tiled_threshold`` on: with ``axis_name=None`` (one device, or a jit that XLA partitions)
  ``clip_loss_tiled`` / ``siglip_loss_tiled`` with ``tile``; per device under ``shard_map`` /
  ``pmap`` the ring, ``clip_loss_chunked`` / ``siglip_loss_chunked``.
  """
  if name not in LOSS_NAMES:
    raise ValueError(f"name={name!r}: allowed: one of {LOSS_NAMES}.")
  for arg, value, least in (("batch_size", batch_size, 1), ("tiled_threshold", tiled_threshold, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
      raise ValueError(f"{arg}={value!r}: allowed: an int >= {least}.")
  tile = tiles.check_tile(tile)
  if not tiled_threshold or batch_size < tiled_threshold:
    if name == "clip" and axis_name is None:
      return functools.partial(clip_fused.clip_loss_fused)
    plain = clip.clip_loss if name == "clip" else siglip.siglip_loss
    return functools.partial(plain, axis_name=axis_name)
  if axis_name is not None:
    ring = clip_ring.clip_loss_chunked if name == "clip" else siglip_ring.siglip_loss_chunked
    return functools.partial(ring, axis_name=axis_name)
  tiled = clip_tiled.clip_loss_tiled if name == "clip" else siglip_tiled.siglip_loss_tiled
  return functools.partial(tiled, tile=tile)
