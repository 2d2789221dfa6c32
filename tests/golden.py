"""Golden values: numbers that a change of init, data order or numerics moves, stored in
tests/goldens/*.json and compared within a stated tolerance.

When is it legitimate to update them? Only when a commit changes results on purpose (a new
initialiser, data order, loss or evaluation) and its message says which numbers moved and why.
A refactor must leave them alone. To update after such a change:

    python -m tests.golden rows STUDY WORKDIR     # rows of a finished smoke run of STUDY
    python -m tests.golden steps                  # one update step of each study's main model

Tolerance: floats within rtol 1e-4 / atol 1e-6 (float summation order differs between XLA
versions; accuracy on 64 test examples moves in steps of 1/64, far outside it); everything else
exact. Wall-clock fields (names containing "seconds") are not compared. Exception: counterfactual
sensitivities (fields under "sensitivity") within rtol 2e-3. They are ratios of distances between
embeddings of scenes that differ in a few pixels, which amplify last-bit differences: the same
commit gave values 4e-4 apart (relative) on two machines of this workplace (different CPUs, so
different XLA:CPU code), with nothing else in the rows moving beyond 1e-4.
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens")
RTOL, ATOL = 1e-4, 1e-6
SENSITIVITY_RTOL = 2e-3


def _strip(value):
  if isinstance(value, dict):
    return {k: _strip(v) for k, v in value.items() if "seconds" not in k}
  if isinstance(value, list):
    return [_strip(v) for v in value]
  return value


def differences(expected, actual, path: str = "") -> list[str]:
  """Where ``actual`` differs from ``expected`` beyond the tolerance (empty: equal)."""
  if isinstance(expected, dict) and isinstance(actual, dict):
    expected, actual = _strip(expected), _strip(actual)
    out = [f"{path}/{k}: missing" for k in expected if k not in actual]
    out += [f"{path}/{k}: not in the golden" for k in actual if k not in expected]
    for k in expected.keys() & actual.keys():
      out += differences(expected[k], actual[k], f"{path}/{k}")
    return out
  if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
    return [d for i, (e, a) in enumerate(zip(expected, actual))
            for d in differences(e, a, f"{path}[{i}]")]
  if (isinstance(expected, float) or isinstance(actual, float)) and not isinstance(
      expected, bool) and isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
    rtol = SENSITIVITY_RTOL if "/sensitivity/" in path else RTOL
    if math.isclose(expected, actual, rel_tol=rtol, abs_tol=ATOL) or (
        math.isnan(expected) and math.isnan(actual)):
      return []
  elif expected == actual:
    return []
  return [f"{path}: golden {expected!r}, now {actual!r}"]


def rows_of(workdir: str) -> dict:
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "rows", "*.json"))):
    with open(path) as f:
      out[os.path.basename(path)[:-5]] = _strip(json.load(f))
  return out


def load(name: str):
  with open(os.path.join(GOLDEN_DIR, name)) as f:
    return json.load(f)


def save(name: str, value) -> None:
  os.makedirs(GOLDEN_DIR, exist_ok=True)
  with open(os.path.join(GOLDEN_DIR, name), "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write("\n")


def main(argv):
  if argv[1:2] == ["rows"] and len(argv) == 4:
    save(f"{argv[2]}_smoke_rows.json", rows_of(argv[3]))
  elif argv[1:2] == ["steps"]:
    from tests import test_goldens
    save("update_steps.json", test_goldens.all_update_steps())
  else:
    sys.exit(__doc__)


if __name__ == "__main__":
  main(sys.argv)
