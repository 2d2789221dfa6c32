"""Flagfiles named as README writes them (``--flagfile=experiments/configs/orbit.flags``) are found
from any directory once the package is installed (``pip install -e .``, or a plain install, whose
package data holds ``experiments/configs/*.flags``).

A relative flagfile path that does not exist from the current directory is looked up under the
directory that holds the ``experiments`` package (the clone, or site-packages); anything else (an
absolute path, a path that exists here, a file that exists nowhere) is left to absl unchanged, so a
missing flagfile is still refused in one line naming it.
"""
from __future__ import annotations

import os
from typing import Sequence

# The directory holding the `experiments` package: the clone for an editable install.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAMES = ("--flagfile", "-flagfile")


def locate(path: str, root: str = ROOT) -> str:
  """``path`` itself, or ``root/path`` when only that exists (relative paths only)."""
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.join(root, path)
  return candidate if os.path.isfile(candidate) else path


def resolve(argv: Sequence[str], root: str = ROOT) -> list[str]:
  """``argv`` with every ``--flagfile=PATH`` (or ``--flagfile PATH``) located by ``locate``."""
  out = list(argv)
  for i, arg in enumerate(out):
    name, eq, value = arg.partition("=")
    if name in _NAMES and eq:
      out[i] = f"{name}={locate(value, root)}"
    elif arg in _NAMES and i + 1 < len(out):
      out[i + 1] = locate(out[i + 1], root)
  return out
