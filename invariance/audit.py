"""Invariance of any jittable classifier, measured over group elements (the orbit study's audit).

    report = audit.audit(logits_fn, images_NHWC, group, elements)

For every example and every element g: the relative change of its logits
``|f(g.x)_n - f(x)_n| / |f(x)_n|`` and whether its argmax flips. Reported: the per-example maximum
over the elements (mean and max over examples), the flip rate (share of (example, element) pairs
whose prediction differs from the identity's), and the batch-level error
(``batch_error``: the worst over elements of the Frobenius ratio over the whole batch, which
dilutes one non-invariant example among the rest). Elements are applied one at a time, with
``fn`` over fixed-size batches, so 256 examples x 576 shifts fits in memory.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import numpy as np

from invariance import evaluate
from invariance import groups as groups_lib
from invariance import orbit

_act = jax.jit(lambda group, g, x: group.act(g, x), static_argnums=0)
_jensen = jax.jit(orbit.jensen_gap, static_argnums=(0, 4))


def eval_elements(group: groups_lib.Group, count: int, seed: int) -> np.ndarray:
  """The identity plus ``count`` distinct random other elements (``count = 0``: every element)."""
  if count == 0:
    return np.arange(group.order)
  rng = np.random.default_rng(1000 + seed)
  others = rng.choice(np.arange(1, group.order), size=min(count, group.order - 1), replace=False)
  return np.concatenate([[0], np.sort(others)])


def audit(fn: Callable, x_NHWC: np.ndarray, group: groups_lib.Group, elements: Sequence[int],
          batch: int = 256, inside: Optional[np.ndarray] = None) -> dict:
  """Invariance of ``fn`` (images -> logits) on ``x`` over ``elements`` (the first must be the
  identity). ``inside``: optional boolean (len(elements),) or (len(elements), N) marking the
  (element, example) pairs that keep the example in the training support; the per-example maxima
  and flip rates are then also given for those pairs and for the rest. Every flip rate is over the
  pairs of the elements other than the identity (which compares the logits with themselves)."""
  elements = np.asarray(elements)
  if elements[0] != 0:
    raise ValueError(f"elements[0]={elements[0]}: the first element must be the identity (0)")
  batch = min(batch, len(x_NHWC))          # no padding work beyond the examples themselves
  logits = lambda g: evaluate.batched_apply(fn, np.asarray(_act(group, int(g), x_NHWC)), batch)
  ref_NK = logits(elements[0])
  ref_norm_N = np.maximum(np.linalg.norm(ref_NK, axis=-1), 1e-12)
  ref_class_N = ref_NK.argmax(-1)
  rel_GN = np.zeros((len(elements), len(ref_NK)), np.float64)
  flip_GN = np.zeros((len(elements), len(ref_NK)), bool)
  batch_error = 0.0
  for i, g in enumerate(elements[1:], start=1):
    out_NK = logits(g)
    diff_NK = out_NK - ref_NK
    rel_GN[i] = np.linalg.norm(diff_NK, axis=-1) / ref_norm_N
    flip_GN[i] = out_NK.argmax(-1) != ref_class_N
    batch_error = max(batch_error, float(np.linalg.norm(diff_NK) /
                                         max(np.linalg.norm(ref_NK), 1e-12)))
  moved = np.ones(rel_GN.shape, bool)
  moved[0] = len(elements) == 1                           # the identity compares with itself
  out = _summary(rel_GN, flip_GN, moved)
  out.update(batch_error=batch_error, elements=int(len(elements)), examples=int(len(ref_NK)))
  if inside is not None:
    inside = np.broadcast_to(np.asarray(inside, bool).reshape(len(elements), -1), rel_GN.shape)
    for name, sel in (("inside_support", inside & moved), ("outside_support", ~inside & moved)):
      if sel.any():
        out[name] = _summary(rel_GN, flip_GN, sel)
  return out


def _summary(rel_GN, flip_GN, mask_GN=None) -> dict:
  """Per-example maximum over the (masked) elements, its mean and max over examples (examples
  with no masked element left out), and the flip rate over the masked pairs."""
  if mask_GN is None:
    mask_GN = np.ones(rel_GN.shape, bool)
  has = mask_GN.any(0)
  per_example = np.where(mask_GN, rel_GN, -np.inf).max(0)[has]
  return {"max_error_mean": float(per_example.mean()), "max_error_max": float(per_example.max()),
          "flip_rate": float(flip_GN[mask_GN].mean())}


def jensen_gaps(net, params, x_NHWC, labels_N, group: groups_lib.Group, batch: int = 32,
                batches: int = 4) -> dict:
  """Orbit-model cross-entropy against the mean cross-entropy over every transformed copy, per
  test example (``orbit.jensen_gap``), on up to ``batches`` batches. For logits linear in the
  features the first can never exceed the second (convexity): ``violations`` is a float sanity
  check, not a finding; ``mean_gap`` (nats) is how much averaging the features lowers the loss."""
  violations, gaps = 0, []
  for b in range(batches):
    x, y = x_NHWC[batch * b:batch * (b + 1)], labels_N[batch * b:batch * (b + 1)]
    if len(y) == 0:
      break
    orbit_loss, aug_loss = (np.asarray(v) for v in _jensen(net, params, x, y, group))
    violations += int(np.sum(orbit_loss > aug_loss + 1e-5))
    gaps.append(aug_loss - orbit_loss)
  gaps = np.concatenate(gaps) if gaps else np.zeros(0)
  return {"batches": len(gaps) // batch + (len(gaps) % batch > 0), "examples": int(len(gaps)),
          "violations": violations, "mean_gap": float(gaps.mean()) if len(gaps) else 0.0}


def audit_transforms(fn: Callable, x_NHWC: np.ndarray, transforms: dict, batch: int = 256
                     ) -> dict[str, dict]:
  """Invariance of ``fn`` (images -> logits) to each of ``transforms`` (``{name: images ->
  images}``, any function, e.g. a non-wrapping shift that is not a group action): per transform,
  the relative change of each example's logits (mean and max over examples) and the flip rate."""
  batch = min(batch, len(x_NHWC))
  ref_NK = evaluate.batched_apply(fn, np.asarray(x_NHWC), batch)
  ref_norm_N = np.maximum(np.linalg.norm(ref_NK, axis=-1), 1e-12)
  out = {}
  for name, transform in transforms.items():
    out_NK = evaluate.batched_apply(fn, np.asarray(transform(x_NHWC)), batch)
    rel_N = np.linalg.norm(out_NK - ref_NK, axis=-1) / ref_norm_N
    flip_N = out_NK.argmax(-1) != ref_NK.argmax(-1)
    out[name] = {"error_mean": float(rel_N.mean()), "error_max": float(rel_N.max()),
                 "flip_rate": float(flip_N.mean())}
  return out


def shift(x_NHWC, dy: int, dx: int, wrap: bool) -> np.ndarray:
  """Translate images by ``(dy, dx)`` pixels: cyclically (``wrap``), or with the edge rows and
  columns repeated into the space the content leaves (nothing wraps around)."""
  x = np.asarray(x_NHWC)
  if wrap:
    return np.roll(x, (dy, dx), axis=(1, 2))
  h, w = x.shape[1:3]
  padded = np.pad(x, ((0, 0), (abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
  y0, x0 = abs(dy) - dy, abs(dx) - dx
  return padded[:, y0:y0 + h, x0:x0 + w]
