"""Read published CLIP / SigLIP weights with numpy only (no torch) into the lab's towers.

* open_clip ``.safetensors`` (the files open_clip publishes; its state-dict key names), for the
  clip family;
* big_vision ``.npz`` (SigLIP's published checkpoints), for the siglip family.

``load(path, "ViT-B-32")`` returns ``(config, params)`` for ``towers.TwoTower(config)``. Any file
that cannot be read, or whose arrays do not fit the architecture, raises ``ValueError`` with one
line naming the file and the first few offending keys.
"""
from __future__ import annotations

import os
import zipfile
from typing import Union

import numpy as np

from invariance.pretrained import config as config_lib
from invariance.pretrained import convert

FORMATS = (".safetensors", ".npz")


def read_arrays(path: str) -> dict[str, np.ndarray]:
  """Every array stored in a ``.safetensors`` or ``.npz`` file, by key."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"checkpoint {path}: no such file")
  try:
    if path.endswith(".safetensors"):
      from safetensors import safe_open
      with safe_open(path, framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
    if path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, Exception) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {reason}); "
                     "is the file complete?") from None
  raise ValueError(f"checkpoint {path}: unknown format, allowed {', '.join(FORMATS)}")


def rules_for(config: config_lib.TowerConfig, keys) -> dict:
  if config.family == "clip":
    return convert.openclip_rules(config)
  return convert.big_vision_rules(config, keys)


def load(path: str, arch: Union[str, config_lib.TowerConfig], dtype=np.float32):
  """``(config, params)`` of the checkpoint at ``path`` for architecture ``arch`` (a name of
  ``config.KNOWN`` or a ``TowerConfig``)."""
  config = config_lib.get_config(arch) if isinstance(arch, str) else arch
  arrays = read_arrays(path)
  try:
    params = convert.convert(arrays, rules_for(config, arrays), convert.param_shapes(config), dtype)
  except convert.CheckpointMismatch as e:
    name = arch if isinstance(arch, str) else f"the given {config.family} config"
    raise ValueError(f"checkpoint {path} does not fit {name}: {e}") from None
  return config, params
