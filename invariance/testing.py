"""Assertions for invariance claims, shared by every test (and usable from notebooks)."""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax.numpy as jnp
import numpy as np

from invariance import groups as groups_lib
from invariance import metrics


def assert_invariant(fn: Callable, group: groups_lib.Group, x_NHWC, rtol: float = 1e-5,
                     elements=None, per_example: bool = False, draws: int = 4,
                     seed: int = 0) -> float:
  """Assert that ``fn`` (a batch of images -> one output row per example) is invariant under
  ``group``; returns the worst relative error, raises AssertionError naming it otherwise.

  Default mode: ||fn(g.x) - fn(x)|| <= rtol * ||fn(x)|| (Frobenius over the batch) for EVERY
  element g (or the given ``elements``), one element applied to the whole batch.
  ``per_example=True``: ``draws`` times, every example gets its own random element (numpy seed
  ``seed``) and each output row must satisfy the bound against its own row of fn(x): a function
  that couples the examples of a batch (batch statistics, attention across the batch) can pass the
  default mode and fail this one.

  A function whose output does not depend on its input (the same output for x and for another
  batch) is refused with a ValueError: no invariance check can fail for it.
  """
  x_NHWC = np.asarray(x_NHWC)
  ref = np.asarray(fn(x_NHWC), np.float64).reshape(len(x_NHWC), -1)
  other = np.asarray(fn(1.7 * x_NHWC[::-1] + 0.3), np.float64).reshape(ref.shape)
  if np.linalg.norm(other - ref) <= rtol * max(np.linalg.norm(ref), 1e-12):
    raise ValueError("fn gives the same output for a different batch (a constant function): an "
                     "invariance check cannot fail for it; allowed: a function of its input")
  if per_example:
    return _assert_invariant_per_example(fn, group, x_NHWC, ref, rtol, draws, seed)
  errs = np.asarray(metrics.invariance_errors(fn, x_NHWC, group, elements))
  worst = int(np.argmax(errs))
  if not errs[worst] <= rtol:
    g = worst if elements is None else int(np.asarray(elements)[worst])
    raise AssertionError(f"not invariant under {group.name}: element {g} changes the output by "
                         f"{errs[worst]:.3g} (relative) > rtol={rtol:g}; "
                         f"{int((errs > rtol).sum())}/{errs.size} elements exceed it")
  return float(errs[worst])


def _assert_invariant_per_example(fn, group, x_NHWC, ref_NF, rtol, draws, seed) -> float:
  rng = np.random.default_rng(seed)
  ref_norm_N = np.maximum(np.linalg.norm(ref_NF, axis=1), 1e-12)
  worst = (0.0, 0, 0)
  for _ in range(draws):
    g_N = rng.integers(0, group.order, len(x_NHWC)).astype(np.int32)
    out_NF = np.asarray(fn(group.act(jnp.asarray(g_N), jnp.asarray(x_NHWC))), np.float64)
    errs_N = np.linalg.norm(out_NF.reshape(ref_NF.shape) - ref_NF, axis=1) / ref_norm_N
    n = int(np.argmax(errs_N))
    if errs_N[n] > worst[0]:
      worst = (float(errs_N[n]), n, int(g_N[n]))
  err, n, g = worst
  if not err <= rtol:
    raise AssertionError(f"not invariant under {group.name} per example: example {n} under "
                         f"element {g} (each example its own element) changes its output by "
                         f"{err:.3g} (relative) > rtol={rtol:g}")
  return err


def assert_composition_matches_action(group: groups_lib.Group, x_NHWC,
                                      compose: Optional[Callable] = None, atol: float = 1e-6) -> None:
  """Assert ``act(compose(g, h), x) == act(g, act(h, x))`` for EVERY pair (g, h).

  ``compose`` defaults to ``group.compose`` (pass another to check a table, or a wrong one as a
  control). The check is only as strong as ``x`` is asymmetric: a ValueError is raised unless the
  |G| images of the orbit of ``x`` are distinct (then a wrong composition cannot hide).
  """
  compose = group.compose if compose is None else compose
  order = group.order
  orbit = np.asarray(group.orbit(x_NHWC))                         # [h] = act(h, x)
  flat = orbit.reshape(order, -1)
  if len({row.tobytes() for row in flat.round(6)}) < order:
    raise ValueError(f"{group.name}: the input is symmetric under some element (its orbit has "
                     f"fewer than {order} distinct images); use an asymmetric input")
  n = x_NHWC.shape[0]
  twice = np.asarray(group.orbit(orbit.reshape((order * n,) + orbit.shape[2:])))
  twice = twice.reshape((order, order) + orbit.shape[1:])         # [g, h] = act(g, act(h, x))
  g, h = np.meshgrid(np.arange(order), np.arange(order), indexing="ij")
  gh = np.asarray(compose(jnp.asarray(g), jnp.asarray(h)))        # [g, h] = g o h
  if gh.shape != (order, order) or gh.min() < 0 or gh.max() >= order:
    raise AssertionError(f"{group.name}: compose gave shape {gh.shape} or values outside "
                         f"[0, {order})")
  bad = ~np.isclose(twice, orbit[gh], atol=atol).reshape(order, order, -1).all(-1)
  if bad.any():
    g0, h0 = (int(i) for i in np.argwhere(bad)[0])
    raise AssertionError(f"{group.name}: composition disagrees with the action on "
                         f"{int(bad.sum())}/{order * order} pairs, e.g. act(compose({g0}, {h0}) = "
                         f"{int(gh[g0, h0])}, x) != act({g0}, act({h0}, x))")


def assert_uniform_draws(draws, support, p_min: float = 1e-6) -> float:
  """Assert that integer ``draws`` are uniform on ``support`` (element indices); returns p.

  ``draws`` has shape (M, ...): M independent repetitions of a sampler whose output has any shape;
  every position of that output (a "slot", e.g. the k-th draw for the n-th example) must have a
  uniform marginal of its own. No draw may lie outside ``support``; the counts are tested with a
  chi-square test (the sum of the per-slot statistics, slots x (|support| - 1) degrees of freedom,
  upper tail by the Wilson-Hilferty normal approximation) that fails below ``p_min``. With
  p_min = 1e-6 a correct sampler fails for one seed in a million; a sampler that never draws a few
  of the elements fails as soon as each element is expected ~20 times per slot.
  """
  d = np.asarray(draws)
  support = np.unique(np.asarray(support))
  m = support.size
  outside = ~np.isin(d, support)
  if outside.any():
    raise AssertionError(f"{int(outside.sum())}/{d.size} draws lie outside the support, e.g. "
                         f"element {int(d[outside][0])}")
  slots = d.reshape(d.shape[0], -1)                               # M, S
  reps, s = slots.shape
  expected = reps / m
  if expected < 5:
    raise ValueError(f"{reps} repetitions for {m} elements: need >= 5 expected draws per element "
                     "and slot for the chi-square test")
  counts = np.zeros((s, m), np.int64)
  slot_of = np.broadcast_to(np.arange(s), slots.shape)
  np.add.at(counts, (slot_of, np.searchsorted(support, slots)), 1)
  stat = float(((counts - expected) ** 2 / expected).sum())
  dof = s * (m - 1)
  z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
  p = 0.5 * math.erfc(z / math.sqrt(2))
  if not p >= p_min:
    pooled = counts.sum(0)
    rarest = int(pooled.argmin())
    raise AssertionError(f"draws are not uniform on the {m} support elements: chi2={stat:.1f} on "
                         f"{dof} dof (p={p:.2g} < {p_min:g}); element {int(support[rarest])} "
                         f"drawn {int(pooled[rarest])} times in all, expected {expected * s:.1f}")
  return p
