"""Assertions for invariance claims, shared by every test (and usable from notebooks)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from invariance import groups as groups_lib
from invariance import metrics


def assert_invariant(fn: Callable, group: groups_lib.Group, x_NHWC, rtol: float = 1e-5,
                     elements=None) -> float:
  """Assert ||fn(g.x) - fn(x)|| <= rtol * ||fn(x)|| for EVERY element g (or the given ones).

  Returns the worst relative error; raises AssertionError naming the worst element otherwise.
  """
  errs = np.asarray(metrics.invariance_errors(fn, x_NHWC, group, elements))
  worst = int(np.argmax(errs))
  if not errs[worst] <= rtol:
    g = worst if elements is None else int(np.asarray(elements)[worst])
    raise AssertionError(f"not invariant under {group.name}: element {g} changes the output by "
                         f"{errs[worst]:.3g} (relative) > rtol={rtol:g}; "
                         f"{int((errs > rtol).sum())}/{errs.size} elements exceed it")
  return float(errs[worst])
