"""The caption studies' optimizer as a factor: AdamW's decoupled weight decay and a fixed temperature.

``make_optimizer(schedule, weight_decay, fixed_temperature)`` builds the optax transformation that
``train.fit`` is given (it builds none itself):

* **AdamW** (``optax.adamw``): Adam, plus ``weight_decay * lr * param`` subtracted from every
  weight matrix (kernels and token embeddings, ndim >= 2) after the Adam step, as CLIP is trained
  (weight decay 0.2; open_clip excludes biases, gains and the logit scale, and so does the mask
  here). ``weight_decay=0`` is Adam exactly (the decay term adds zeros).
* **Fixed temperature**: the loss's temperature parameter (CLIP's ``log_scale``, SigLIP's
  ``t_prime``) gets a zero update, so it stays at its initial (or starting) value; SigLIP's bias
  stays learned.

``decay_mask(params)`` and ``temperature_mask(params)`` are the boolean pytrees of which leaves
decay and which are frozen.
"""
from __future__ import annotations

import jax
import optax

TEMPERATURE_PARAMS = ("log_scale", "t_prime")


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decay_mask(params):
  """True for the weight matrices (ndim >= 2) that decoupled weight decay shrinks."""
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def temperature_mask(params):
  """True for the loss's temperature leaf (``TEMPERATURE_PARAMS``), wherever it sits."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(set(_path_names(path)) & set(TEMPERATURE_PARAMS)), params)


def make_optimizer(schedule, weight_decay: float = 0.0, fixed_temperature: bool = False,
                   b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
  """AdamW at learning rate ``schedule`` (a float or an optax schedule) with decoupled
  ``weight_decay`` on the weight matrices, and the temperature frozen if ``fixed_temperature``."""
  if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
      or weight_decay < 0:
    raise ValueError(f"weight_decay={weight_decay!r} is invalid; allowed: a float >= 0")
  if not isinstance(fixed_temperature, bool):
    raise ValueError(f"fixed_temperature={fixed_temperature!r} is invalid; allowed: True or False")
  opt = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=float(weight_decay), mask=decay_mask)
  if fixed_temperature:
    opt = optax.chain(opt, optax.masked(optax.set_to_zero(), temperature_mask))
  return opt
