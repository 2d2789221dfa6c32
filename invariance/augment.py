"""Soft invariance by augmentation: one random group element per example.

With ``support`` (element indices) the *result* is restricted to the support: for translations of
a glyph whose current position is element ``current`` (a shift of a glyph at the origin), the new
position q is drawn from the support and the example is moved by ``q o current^-1``. Without
``current`` the drawn element is applied directly.
"""
from __future__ import annotations

from typing import Optional

import jax
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


def fourier_shift(x_NHWC, shifts_N2):
  """Cyclic translation by real-valued (dy, dx) per example, exact band-limited interpolation.

  Differentiable in the shifts (used to learn augmentation ranges); for integer shifts it equals
  ``jnp.roll``.
  """
  _, h, w, _ = x_NHWC.shape
  ky = jnp.fft.fftfreq(h)[None, :, None, None]
  kx = jnp.fft.fftfreq(w)[None, None, :, None]
  dy = shifts_N2[:, 0][:, None, None, None]
  dx = shifts_N2[:, 1][:, None, None, None]
  phase = jnp.exp(-2j * jnp.pi * (ky * dy + kx * dx))
  return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x_NHWC, axes=(1, 2)) * phase, axes=(1, 2)))


def learned_shifts(key, width_2, n: int, num_samples: int = 1):
  """Augerino-style shifts: width * u with u ~ U[-1, 1]^2 -> (num_samples, n, 2)."""
  u = jax.random.uniform(key, (num_samples, n, 2), minval=-1.0, maxval=1.0)
  return u * width_2
