"""Soft invariance by augmentation: one random group element per example.

With ``support`` (element indices) the *result* is restricted to the support: for translations of
a glyph whose current position is element ``current`` (a shift of a glyph at the origin), the new
position q is drawn from the support and the example is moved by ``q o current^-1``. Without
``current`` the drawn element is applied directly.
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from invariance import groups as groups_lib


def random_elements(key, group: groups_lib.Group, n: int, support=None, current=None):
  """Elements to apply to n examples so that each lands uniformly on ``support`` (or anywhere)."""
  target = group.sample(key, (n,), support)
  if current is None:
    return target
  return group.compose(target, group.inverse(jnp.asarray(current, jnp.int32)))


def augment(key, x_NHWC, group: groups_lib.Group, support=None, current: Optional[jnp.ndarray] = None):
  """Returns (augmented batch, elements applied)."""
  g = random_elements(key, group, x_NHWC.shape[0], support, current)
  return group.act(g, x_NHWC), g
