"""Finite groups acting on NHWC image batches.

Every group element is an integer index in ``[0, order)``; index 0 is the identity. A group knows
how to apply an element to a batch (one element for the whole batch, or one per example), how to
compose and invert elements, how to enumerate the orbit of a batch, and how to sample elements,
optionally only from a *support* (a subset of element indices, e.g. the shifts that keep an object
in the bottom half of the canvas).

Convention: ``act(compose(g, h), x) == act(g, act(h, x))``.

Groups provided:
  * ``Translations(H, W)`` - cyclic shifts Z_H x Z_W; element ``dy * W + dx`` is ``roll(x, (dy, dx))``.
  * ``Rotations()``        - C4; element ``r`` rotates by ``r`` x 90 degrees (``jnp.rot90``, k=r).
  * ``Flips()``            - Z2; element 1 flips left-right.
  * ``Dihedral()``         - D4; element ``4 * s + r`` is "flip ``s`` times, then rotate ``r`` times".
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class Group:
  """Base class. Subclasses define ``order``, ``_act_static``, ``compose_table``."""

  name: str = "group"

  @property
  def order(self) -> int:
    raise NotImplementedError

  # -- algebra ---------------------------------------------------------------------------------
  def compose_table(self) -> np.ndarray:
    """Cayley table ``T[g, h] = g o h`` as a numpy int array (order x order)."""
    raise NotImplementedError

  def compose(self, g, h):
    """Index of ``g o h`` (apply h first). Works on ints and int arrays (broadcasting)."""
    table = jnp.asarray(self.compose_table())
    return table[g, h]

  def inverse(self, g):
    table = self.compose_table()
    inv = np.argmax(table == 0, axis=1)
    return jnp.asarray(inv)[g]

  @property
  def identity(self) -> int:
    return 0

  def elements(self) -> jnp.ndarray:
    return jnp.arange(self.order, dtype=jnp.int32)

  # -- action ----------------------------------------------------------------------------------
  def _act_static(self, g: int, x_NHWC: jnp.ndarray) -> jnp.ndarray:
    raise NotImplementedError

  def check_input(self, x_NHWC) -> None:
    if x_NHWC.ndim != 4:
      raise ValueError(f"{self.name}: expected an NHWC batch (4 dims), got shape {x_NHWC.shape}")

  def act(self, g, x_NHWC: jnp.ndarray) -> jnp.ndarray:
    """Apply element ``g`` to a batch.

    ``g`` may be a python int, a scalar array (same element for every example) or an int array of
    shape (N,) (one element per example).
    """
    self.check_input(x_NHWC)
    if isinstance(g, (int, np.integer)):
      if not 0 <= int(g) < self.order:
        raise ValueError(f"{self.name}: element {g} is outside [0, {self.order})")
      return self._act_static(int(g), x_NHWC)
    g = jnp.asarray(g, jnp.int32)
    if g.ndim == 0:
      return self._act_traced(g, x_NHWC)
    if g.shape != (x_NHWC.shape[0],):
      raise ValueError(f"{self.name}: per-example elements must have shape (N,)=({x_NHWC.shape[0]},),"
                       f" got {g.shape}")
    return jax.vmap(lambda gi, xi: self._act_traced(gi, xi[None])[0])(g, x_NHWC)

  def _act_traced(self, g, x_NHWC):
    branches = [lambda x, k=k: self._act_static(k, x) for k in range(self.order)]
    return jax.lax.switch(g, branches, x_NHWC)

  def orbit(self, x_NHWC: jnp.ndarray, elements: Optional[Sequence[int]] = None) -> jnp.ndarray:
    """All transformed copies: shape (|elements|, N, H, W, C); default every element of the group."""
    self.check_input(x_NHWC)
    if elements is None:
      elements = self.elements()
    return jax.vmap(lambda g: self._act_traced(g, x_NHWC))(jnp.asarray(elements, jnp.int32))

  # -- sampling --------------------------------------------------------------------------------
  def sample(self, key, shape, support=None) -> jnp.ndarray:
    """Uniform elements of the group, or of ``support`` (an int array of element indices)."""
    if isinstance(shape, int):
      shape = (shape,)
    if support is None:
      return jax.random.randint(key, shape, 0, self.order, dtype=jnp.int32)
    support = self.validate_support(support)
    idx = jax.random.randint(key, shape, 0, support.shape[0], dtype=jnp.int32)
    return jnp.asarray(support)[idx]

  def validate_support(self, support) -> np.ndarray:
    s = np.asarray(support)
    if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer):
      raise ValueError(f"{self.name}: support must be a non-empty 1-D int array of element indices,"
                       f" got shape {s.shape} dtype {s.dtype}")
    if s.min() < 0 or s.max() >= self.order:
      raise ValueError(f"{self.name}: support elements must lie in [0, {self.order}),"
                       f" got min {s.min()} max {s.max()}")
    return s.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Translations(Group):
  """Cyclic translations Z_H x Z_W of an H x W canvas."""

  height: int
  width: int
  name: str = "translations"

  def __post_init__(self):
    if self.height < 1 or self.width < 1:
      raise ValueError(f"translations: height and width must be >= 1, got {self.height}x{self.width}")

  @property
  def order(self) -> int:
    return self.height * self.width

  def element(self, dy, dx):
    """Element index of the shift (dy, dx) (taken modulo the canvas)."""
    return (jnp.asarray(dy) % self.height) * self.width + (jnp.asarray(dx) % self.width)

  def shift(self, g):
    """(dy, dx) of element g."""
    g = jnp.asarray(g)
    return g // self.width, g % self.width

  def compose_table(self) -> np.ndarray:
    dy, dx = np.divmod(np.arange(self.order), self.width)
    return (((dy[:, None] + dy[None, :]) % self.height) * self.width
            + (dx[:, None] + dx[None, :]) % self.width)

  def compose(self, g, h):
    gy, gx = self.shift(g)
    hy, hx = self.shift(h)
    return self.element(gy + hy, gx + hx)

  def inverse(self, g):
    gy, gx = self.shift(g)
    return self.element(-gy, -gx)

  def check_input(self, x_NHWC):
    super().check_input(x_NHWC)
    if x_NHWC.shape[1:3] != (self.height, self.width):
      raise ValueError(f"translations: group is for {self.height}x{self.width} canvases, "
                       f"got images of {x_NHWC.shape[1]}x{x_NHWC.shape[2]}")

  def _act_static(self, g, x_NHWC):
    dy, dx = divmod(g, self.width)
    return jnp.roll(x_NHWC, (dy, dx), axis=(1, 2))

  def _act_traced(self, g, x_NHWC):
    dy, dx = self.shift(g)
    return jnp.roll(x_NHWC, (dy, dx), axis=(1, 2))

  def support_from_ranges(self, dy_range: tuple[int, int], dx_range: tuple[int, int]) -> np.ndarray:
    """Element indices of all shifts with dy in [dy0, dy1) and dx in [dx0, dx1) (modulo canvas)."""
    dys = np.arange(*dy_range) % self.height
    dxs = np.arange(*dx_range) % self.width
    return np.unique((dys[:, None] * self.width + dxs[None, :]).ravel()).astype(np.int32)


class _SquareGroup(Group):
  def check_input(self, x_NHWC):
    super().check_input(x_NHWC)
    if x_NHWC.shape[1] != x_NHWC.shape[2]:
      raise ValueError(f"{self.name}: needs square images, got {x_NHWC.shape[1]}x{x_NHWC.shape[2]}")


@dataclasses.dataclass(frozen=True)
class Rotations(_SquareGroup):
  """C4: rotations by multiples of 90 degrees (counter-clockwise, ``jnp.rot90``)."""

  name: str = "rotations"

  @property
  def order(self) -> int:
    return 4

  def compose_table(self):
    r = np.arange(4)
    return (r[:, None] + r[None, :]) % 4

  def _act_static(self, g, x_NHWC):
    return jnp.rot90(x_NHWC, k=g, axes=(1, 2))


@dataclasses.dataclass(frozen=True)
class Flips(Group):
  """Z2: identity and the left-right flip."""

  name: str = "flips"

  @property
  def order(self) -> int:
    return 2

  def compose_table(self):
    s = np.arange(2)
    return (s[:, None] + s[None, :]) % 2

  def _act_static(self, g, x_NHWC):
    return jnp.flip(x_NHWC, axis=2) if g else x_NHWC


@dataclasses.dataclass(frozen=True)
class Dihedral(_SquareGroup):
  """D4: element ``4*s + r`` maps x to rot90^r(flip^s(x))."""

  name: str = "dihedral"

  @property
  def order(self) -> int:
    return 8

  def compose_table(self):
    # rot^r1 flip^s1 rot^r2 flip^s2 = rot^(r1 + (-1)^s1 r2) flip^(s1 + s2)
    g = np.arange(8)
    s, r = np.divmod(g, 4)
    s1, r1, s2, r2 = s[:, None], r[:, None], s[None, :], r[None, :]
    r_out = (r1 + np.where(s1 == 1, -r2, r2)) % 4
    s_out = (s1 + s2) % 2
    return 4 * s_out + r_out

  def _act_static(self, g, x_NHWC):
    s, r = divmod(g, 4)
    if s:
      x_NHWC = jnp.flip(x_NHWC, axis=2)
    return jnp.rot90(x_NHWC, k=r, axes=(1, 2))


GROUPS = ("translations", "rotations", "flips", "dihedral")


def make_group(name: str, height: int, width: int) -> Group:
  """Build a group by name for H x W images; raises ValueError naming what is allowed."""
  if name == "translations":
    return Translations(height, width)
  if name in ("rotations", "dihedral") and height != width:
    raise ValueError(f"group={name!r} needs a square canvas, got {height}x{width}")
  if name == "rotations":
    return Rotations()
  if name == "flips":
    return Flips()
  if name == "dihedral":
    return Dihedral()
  raise ValueError(f"group={name!r} is unknown; allowed: {', '.join(GROUPS)}")
