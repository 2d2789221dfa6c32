"""Accuracy and invariance error."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from invariance import groups as groups_lib


def accuracy(logits_NK, labels_N, mask_N=None) -> jnp.ndarray:
  correct = (jnp.argmax(logits_NK, -1) == labels_N).astype(jnp.float32)
  if mask_N is None:
    return correct.mean()
  mask_N = mask_N.astype(jnp.float32)
  return (correct * mask_N).sum() / jnp.maximum(mask_N.sum(), 1.0)


def orbit_outputs(fn: Callable, x_NHWC, group: groups_lib.Group, elements=None):
  """fn on every transformed copy, one element at a time (lax.map keeps memory at one batch)."""
  elements = group.elements() if elements is None else jnp.asarray(elements, jnp.int32)
  return jax.lax.map(lambda g: fn(group.act(g, x_NHWC)), elements)


def relative_change(outs_G, ref):
  """||outs[g] - ref||_F / ||ref||_F for each g (works on numpy and jax arrays)."""
  xp = jnp if isinstance(outs_G, jax.Array) else __import__("numpy")
  diff = xp.sqrt(xp.sum((outs_G - ref[None]) ** 2, axis=tuple(range(1, outs_G.ndim))))
  return diff / xp.maximum(xp.sqrt(xp.sum(ref ** 2)), 1e-12)


def invariance_errors(fn: Callable, x_NHWC, group: groups_lib.Group, elements=None):
  """Per-element relative change ||fn(g.x) - fn(x)||_F / ||fn(x)||_F over the batch -> (|elements|,)."""
  return relative_change(orbit_outputs(fn, x_NHWC, group, elements), fn(x_NHWC))


def invariance_error(fn: Callable, x_NHWC, group: groups_lib.Group, elements=None) -> jnp.ndarray:
  """Worst relative change of fn's output over the orbit (0 for an exactly invariant fn)."""
  return jnp.max(invariance_errors(fn, x_NHWC, group, elements))
