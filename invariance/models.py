"""Every orbit-study model by name: a network plus how it makes logits in training and evaluation.

    spec = models.ModelSpec(mlp_hidden=(64, 64))      # the study: OrbitConfig().model_spec()
    model = models.make("orbit_full", spec, group, support)
    params = model.init(key, images_NHWC)
    loss, aux = model.loss(params, batch, key)       # batch: images, labels (+ elements)
    logits = model.eval_logits(params, images_NHWC)  # deterministic

Models (``NAMES``): ``mlp`` (no invariance), ``mlp_aug_support`` / ``mlp_aug_full`` (a random
group element per example, landing on the training support / anywhere), ``orbit_full`` (features
averaged over the whole group; the fast DFT path for translations), ``orbit_sampled`` (k sampled
elements), the ConvNets of ``CONVNETS`` (``cnn_gap``: circular padding + global average pool,
exactly shift-invariant; ``cnn_zero_gap`` / ``cnn_circ_flat`` / ``cnn_flat``: zero padding and/or
a flatten head; ``cnn_strided``: stride-2 layers, not invariant; ``cnn_aps``: the same with
adaptive polyphase sampling, exactly invariant), ``p4`` (p4 group ConvNet + group pooling),
``learned_aug``
(Augerino-style learnable shift range, ``LearnedShift``, rewarded for width; predictions averaged
over sampled shifts at evaluation).

Parameters are ``{"net": network params, **extra}`` (``learned_aug``: ``"aug"``: the
``LearnedShift`` module's variables). Pure functions of ``(params, batch, key)``: no hidden state.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invariance import augment
from invariance import encoders
from invariance import groups as groups_lib
from invariance import metrics
from invariance import orbit
from invariance import train

# ConvNets that change one thing at a time: padding (circular / zero), head (global average pool /
# flatten), downsampling (none / plain stride 2 / adaptive polyphase sampling).
CONVNETS = {"cnn_gap": dict(circular=True, global_pool=True),
            "cnn_zero_gap": dict(circular=False, global_pool=True),
            "cnn_circ_flat": dict(circular=True, global_pool=False),
            "cnn_flat": dict(circular=False, global_pool=False),
            "cnn_strided": dict(circular=True, global_pool=True, downsample="stride"),
            "cnn_aps": dict(circular=True, global_pool=True, downsample="aps")}
TRANSLATION_MODELS = ("mlp", "mlp_aug_support", "mlp_aug_full", "orbit_full", "orbit_sampled",
                      *CONVNETS, "learned_aug")
ROTATION_MODELS = ("mlp", "mlp_aug_full", "orbit_full", "orbit_sampled", "p4", "cnn_flat")
NAMES = tuple(dict.fromkeys(TRANSLATION_MODELS + ROTATION_MODELS))
EVAL_KEY_SEED = 12345             # the fixed key of sampled evaluations (orbit_sampled, learned_aug)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Hyper-parameters shared by the models (each uses the ones it needs: ``NEEDS``). They have no
  default here: the study's config is their one home (``OrbitConfig.model_spec`` in
  experiments/orbit_config.py); ``make`` refuses a model whose hyperparameters are left unset."""
  mlp_hidden: Optional[tuple] = None       # MLP hidden widths (every MLP-based model)
  cnn_channels: Optional[tuple] = None     # channels per 3x3 layer (the ConvNets and p4)
  orbit_samples: Optional[int] = None      # orbit_sampled: group elements drawn per example
  canvas: Optional[int] = None             # learned_aug: the shift range lives in (0, canvas / 2)
  aug_width_reg: Optional[float] = None    # learned_aug: weight of the reward for a wide range
  aug_eval_samples: Optional[int] = None   # learned_aug: predictions averaged at evaluation
  num_classes: int = 10                    # from the data
  dtype: Optional[str] = None              # computation dtype; None: float32 (parameters: float32)


_MLP_FIELDS = ("mlp_hidden",)
NEEDS = {**{m: _MLP_FIELDS for m in ("mlp", "mlp_aug_support", "mlp_aug_full", "orbit_full")},
         "orbit_sampled": _MLP_FIELDS + ("orbit_samples",),
         **{m: ("cnn_channels",) for m in (*CONVNETS, "p4")},
         "learned_aug": _MLP_FIELDS + ("canvas", "aug_width_reg", "aug_eval_samples")}


class LearnedShift(nn.Module):
  """A learnable range of cyclic shifts: ``(dy, dx) = width * u``, ``u ~ U[-1, 1]^2``, with
  ``width = canvas / 2 * sigmoid(width_logit)`` per axis; the images are shifted by band-limited
  Fourier interpolation, so the range gets gradients."""

  canvas: int
  init_logit: float = -2.0

  def setup(self):
    self.width_logit = self.param("width_logit", nn.initializers.constant(self.init_logit), (2,))

  def width(self):
    return self.canvas / 2 * jax.nn.sigmoid(self.width_logit)

  def __call__(self, x_NHWC, key, num_samples: int):
    """``num_samples`` shifted copies of the batch -> (num_samples, N, H, W, C)."""
    t_SN2 = augment.learned_shifts(key, self.width(), x_NHWC.shape[0], num_samples)
    return jax.vmap(lambda s: augment.fourier_shift(x_NHWC, s))(t_SN2)


@dataclasses.dataclass(frozen=True)
class Model:
  """A network plus how it produces logits in training and at evaluation (pure functions)."""

  name: str
  net: nn.Module
  init: Callable                  # (key, images) -> params
  train_logits: Callable          # (params, batch, key) -> logits
  eval_logits: Callable           # (params, images) -> logits, deterministic
  penalty: Optional[Callable] = None    # params -> (loss term, aux scalars)

  def loss(self, params, batch, key):
    """Cross-entropy (+ the model's penalty) and its aux scalars (``acc``, ...)."""
    logits = self.train_logits(params, batch, key)
    loss = train.cross_entropy(logits, batch["labels"])
    aux = {"acc": metrics.accuracy(logits, batch["labels"])}
    if self.penalty is not None:
      term, extra = self.penalty(params)
      loss, aux = loss + term, {**aux, **extra}
    return loss, aux


def num_params(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def make(name: str, spec: ModelSpec, group: groups_lib.Group,
         support: Optional[np.ndarray] = None) -> Model:
  """The model ``name`` (one of ``NAMES``) for ``group``; ``support``: the group elements of the
  training support (``mlp_aug_support`` draws its shifts there)."""
  if name not in NAMES:
    raise ValueError(f"model={name!r}; allowed: {', '.join(NAMES)}")
  unset = [f for f in NEEDS[name] if getattr(spec, f) is None]
  if unset:
    raise ValueError(f"model={name!r} needs ModelSpec.{unset[0]}; allowed: a value (the study "
                     "config sets it)")
  eval_key = jax.random.key(EVAL_KEY_SEED)
  dtype = None if spec.dtype in (None, "float32") else jnp.dtype(spec.dtype)
  mlp = encoders.MLP(spec.mlp_hidden or (), spec.num_classes, dtype=dtype)
  plain_init = lambda net: lambda key, x: {"net": net.init(key, x)}
  plain = lambda net: lambda p, x: net.apply(p["net"], x)

  if name in ("mlp", "mlp_aug_support", "mlp_aug_full"):
    aug_support = support if name == "mlp_aug_support" else None

    def train_logits(p, batch, key):
      x = batch["images"]
      if name != "mlp":
        current = batch["elements"] if aug_support is not None else None
        x, _ = augment.augment(key, x, group, aug_support, current)
      return mlp.apply(p["net"], x)
    return Model(name, mlp, plain_init(mlp), train_logits, plain(mlp))

  if name in ("orbit_full", "orbit_sampled"):
    if name == "orbit_full":
      fast = isinstance(group, groups_lib.Translations)
      om = orbit.OrbitModel(mlp, group, mode="fast" if fast else "full")
    else:
      om = orbit.OrbitModel(mlp, group, mode="sampled", num_samples=spec.orbit_samples)
    return Model(name, mlp, plain_init(mlp),
                 lambda p, batch, key: om.apply(p["net"], batch["images"], key),
                 lambda p, x: om.apply(p["net"], x, eval_key))

  if name in CONVNETS or name == "p4":
    net = (encoders.GroupCNN("rotations", spec.cnn_channels, num_classes=spec.num_classes,
                             dtype=dtype)
           if name == "p4" else encoders.ConvNet(spec.cnn_channels, num_classes=spec.num_classes,
                                                 dtype=dtype, **CONVNETS[name]))
    return Model(name, net, plain_init(net),
                 lambda p, batch, key: net.apply(p["net"], batch["images"]), plain(net))

  # learned_aug
  aug = LearnedShift(spec.canvas)

  def init(key, x):
    return {"net": mlp.init(key, x), "aug": aug.init(jax.random.key(0), x, key, 1)}

  def shifted_logits(p, x, key, k):
    xs = aug.apply(p["aug"], x, key, k)
    return mlp.apply(p["net"], xs.reshape((-1,) + x.shape[1:])).reshape(k, x.shape[0], -1)

  def penalty(p):
    width = aug.apply(p["aug"], method=LearnedShift.width)        # pixels
    frac = width / (spec.canvas / 2)                              # fraction of half the canvas
    return -spec.aug_width_reg * jnp.sum(frac), {"width_y": width[0], "width_x": width[1]}

  return Model(name, mlp, init, lambda p, batch, key: shifted_logits(p, batch["images"], key, 1)[0],
               lambda p, x: shifted_logits(p, x, eval_key, spec.aug_eval_samples).mean(0), penalty)


def orbit_eval_logits(model: Model, group: groups_lib.Group) -> Callable:
  """``(params, images) -> logits`` of an MLP-based model's network averaged over the whole orbit
  at test time (the same parameters, e.g. those ``mlp_aug_full`` learned by augmentation)."""
  if not isinstance(model.net, encoders.MLP):
    raise ValueError(f"{model.name}: test-time orbit averaging needs an MLP-based model")
    # (the fast DFT path needs the MLP's first layer)
  mode = "fast" if isinstance(group, groups_lib.Translations) else "full"
  om = orbit.OrbitModel(model.net, group, mode=mode)
  return lambda p, x: om.apply(p["net"], x)


def learned_width(model: Model, params) -> dict:
  """``learned_aug``'s shift range in pixels, ``{"dy": .., "dx": ..}``."""
  _, aux = model.penalty(params)
  return {"dy": float(aux["width_y"]), "dx": float(aux["width_x"])}
