"""Encoders (Flax linen). Each exposes ``embed`` (penultimate features) and ``classify`` (the head),
and ``__call__ = classify(embed(x))``, so orbit averaging can wrap the feature extractor.

* ``MLP``           - no invariance. Its first layer is a ``FlatDense`` so the orbit module can
                      compute its responses to every cyclic shift at once
                      (``invariance.kernels.translation_orbit``).
* ``CircularCNN``   - circular padding, stride 1, global average pool: hard invariance to cyclic
                      translations (the pool is the operation that makes it invariant).
* ``FlatCNN``       - the control: same convolutions, zero padding, flatten head. Not invariant.
* ``GroupCNN``      - p4 (``group="rotations"``) or p4m (``group="dihedral"``) group convolutions
                      with group pooling: hard C4 / D4 invariance on square inputs.

Convolutions: ``conv_path`` picks the implementation by backend - XLA's own convolution on GPU
and TPU (cuDNN, the TPU's convolution units; circular padding as an explicit wrap, then a VALID
conv), the chunked im2col matmuls on CPU (``invariance.kernels.im2col_conv``), which are faster
there (docs/benchmarks.md). Both compute the same function with the same parameters (tested equal in
values and gradients on CPU).

Precision: ``dtype`` (None: float32) is the computation dtype of the towers (e.g.
``jnp.bfloat16``); parameters stay float32 (cast at use), so optimizer state is float32 too.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invariance import groups as groups_lib
from invariance.kernels import im2col_conv
from invariance.kernels import translation_orbit


class FlatDense(nn.Module):
  """Dense layer on the flattened image whose kernel keeps the image layout (H, W, C, F)."""

  features: int

  def __call__(self, x_NHWC):
    kernel, bias = self.params_for(x_NHWC.shape[1:])
    dt = x_NHWC.dtype
    return jnp.einsum("nhwc,hwcf->nf", x_NHWC, kernel.astype(dt)) + bias.astype(dt)

  @nn.compact
  def params_for(self, hwc):
    h, w, c = hwc
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                            in_axis=(0, 1, 2), out_axis=3)
    kernel = self.param("kernel", init, (h, w, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return kernel, bias

  def all_shifts(self, x_NHWC):
    """Responses to every cyclic shift of the input: (N, H*W, F), row ``dy*W + dx`` for
    ``roll(x, (dy, dx))``. A circular cross-correlation of x with the kernel,
    out[d] = sum_u x[u] k[u + d], computed with real-DFT matmuls (see ``_shift_responses``)."""
    kernel, bias = self.params_for(x_NHWC.shape[1:])
    return translation_orbit.shift_responses(x_NHWC, kernel, bias)


class MLP(nn.Module):
  hidden: Sequence[int] = (256, 256)
  num_classes: int = 10
  dtype: Optional[Any] = None        # computation dtype of ``embed`` (see module docstring)

  def setup(self):
    self.first = FlatDense(self.hidden[0])
    self.rest = [nn.Dense(h, dtype=self.dtype) for h in self.hidden[1:]]
    self.head = nn.Dense(self.num_classes)

  def _after_first(self, h):
    h = nn.relu(h)
    for layer in self.rest:
      h = nn.relu(layer(h))
    return h

  def embed(self, x_NHWC):
    if self.dtype is not None:
      x_NHWC = x_NHWC.astype(self.dtype)
    return self._after_first(self.first(x_NHWC)).astype(jnp.float32)

  def embed_translation_orbit(self, x_NHWC):
    """Features of every cyclic shift of x: (N, H*W, F); the first layer by DFT matmuls."""
    return self._after_first(self.first.all_shifts(x_NHWC))

  def translation_orbit_mean(self, x_NHWC):
    """mean over all H*W cyclic shifts of ``embed``: (N, F). Same value as
    ``embed_translation_orbit(x).mean(1)``, computed in chunks of images that stay in cache,
    with a hand-written backward pass that keeps only each matmul's input."""
    if self.is_initializing():
      return self.embed_translation_orbit(x_NHWC).mean(axis=1)
    kernel, bias = self.first.params_for(x_NHWC.shape[1:])
    rest = [(layer.variables["params"]["kernel"], layer.variables["params"]["bias"])
            for layer in self.rest]
    return translation_orbit.orbit_mean(x_NHWC, kernel, bias, rest)

  def classify(self, features):
    return self.head(features)

  def __call__(self, x_NHWC):
    return self.classify(self.embed(x_NHWC))


def circular_pad(x_NHWC, pad: int):
  """Wrap-around padding of the spatial axes (what makes a conv commute with cyclic shifts)."""
  if pad == 0:
    return x_NHWC
  x = jnp.concatenate([x_NHWC[:, -pad:], x_NHWC, x_NHWC[:, :pad]], axis=1)
  return jnp.concatenate([x[:, :, -pad:], x, x[:, :, :pad]], axis=2)


CONV_PATHS = ("auto", "native", "im2col")


def conv_path(requested: str = "auto", backend: Optional[str] = None) -> str:
  """The convolution implementation the ConvNets use: ``"native"`` (XLA's convolution: cuDNN on
  GPU, the convolution units on TPU) on every accelerator, ``"im2col"`` (chunked matmuls with a
  hand-written gradient, tuned for XLA:CPU) on CPU. ``requested`` other than ``"auto"`` overrides
  the choice (the bench's ``--conv_impl``); ``backend`` defaults to ``jax.default_backend()``."""
  if requested not in CONV_PATHS:
    raise ValueError(f"conv_impl={requested!r}; allowed: {', '.join(CONV_PATHS)}")
  if requested != "auto":
    return requested
  return "im2col" if (backend or jax.default_backend()) == "cpu" else "native"


def _native_conv(x_NHWC, kernel_KKIO, bias_O, wrap: bool, relu: bool):
  """The same function as ``im2col_conv.patch_conv`` through ``lax.conv_general_dilated``: wrap-around
  padding made explicit (then VALID), or zero "SAME" padding. The bias is added in its own
  (float32) precision, so that its gradient, a sum over every position of the batch, is not
  accumulated in bfloat16 (measured: 50-90% off for a 128 x 24 x 24 batch); the output has the
  input's dtype."""
  k = kernel_KKIO.shape[0]
  x = circular_pad(x_NHWC, k // 2) if wrap else x_NHWC
  y = jax.lax.conv_general_dilated(x, kernel_KKIO, (1, 1), "VALID" if wrap else "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.astype(bias_O.dtype) + bias_O
  return (jnp.maximum(y, 0) if relu else y).astype(x_NHWC.dtype)


class PatchConv(nn.Module):
  """Conv, stride 1, odd kernel, wrap-around (``circular=True``) or zero "SAME" padding, then
  ReLU (``relu=True``); same parameters as ``nn.Conv``. ``impl`` (see ``conv_path``): chunked
  im2col matmuls, or XLA's convolution. ``dtype``: computation dtype (parameters float32)."""

  features: int
  kernel_size: int = 3
  circular: bool = True
  relu: bool = False
  impl: str = "auto"
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x_NHWC):
    if self.kernel_size % 2 != 1:
      raise ValueError(f"PatchConv needs an odd kernel_size, got {self.kernel_size}")
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x_NHWC.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    dt = self.dtype or x_NHWC.dtype
    x_NHWC, kernel = x_NHWC.astype(dt), kernel.astype(dt)
    if conv_path(self.impl) == "native":
      return _native_conv(x_NHWC, kernel, bias, self.circular, self.relu)
    return im2col_conv.patch_conv(x_NHWC, kernel, bias.astype(dt), self.circular, self.relu)


DOWNSAMPLING = ("none", "stride", "aps")


def polyphase_components(x_NHWC):
  """The four stride-2 sub-grids of a map with even sides: (4, N, H/2, W/2, C), offsets (0, 0),
  (0, 1), (1, 0), (1, 1)."""
  return jnp.stack([x_NHWC[:, a::2, b::2] for a in (0, 1) for b in (0, 1)])


def stride_downsample(x_NHWC):
  """Plain stride 2: always the (0, 0) sub-grid. A shift by one pixel moves the input onto
  another sub-grid, so the output is not shift-equivariant (the control)."""
  return x_NHWC[:, ::2, ::2]


def aps_downsample(x_NHWC):
  """Adaptive polyphase sampling (Chaman & Dokmanic 2021): per example, keep the stride-2
  sub-grid of largest l2 norm. A cyclic shift of the input permutes the sub-grids (and shifts
  them), so the choice follows the shift: circular convs + APS + global pool are exactly
  invariant to every cyclic shift (up to ties in the norms)."""
  comps_PNhwC = polyphase_components(x_NHWC)
  norms_PN = jnp.sum(comps_PNhwC ** 2, axis=(2, 3, 4))
  pick_N = jnp.argmax(norms_PN, axis=0)
  return jnp.take_along_axis(comps_PNhwC, pick_N[None, :, None, None, None], axis=0)[0]


def _check_channels(channels) -> None:
  if not channels or any(int(c) < 1 for c in channels):
    raise ValueError(f"channels={tuple(channels)!r}; allowed: one or more positive widths (no "
                     "default: a study's config, e.g. OrbitConfig.model_spec, gives them)")


class ConvNet(nn.Module):
  """Convs (ReLU), each but the last optionally followed by stride-2 downsampling, then global
  average pool (``global_pool``) or flatten, then a head.

  With ``circular=True`` padding wraps around and the global pool makes the stride-1 net exactly
  invariant to cyclic shifts; zero padding, the flatten head or plain strides break that (the
  controls); ``downsample="aps"`` keeps it with strides (sides divisible by 2**(layers - 1)).
  """

  channels: Sequence[int] = ()        # required: the studies' configs hold the sizes
  kernel_size: int = 3
  num_classes: int = 10
  circular: bool = True
  global_pool: bool = True
  downsample: str = "none"
  conv_impl: str = "auto"            # see ``conv_path``
  dtype: Optional[Any] = None        # computation dtype (see module docstring)

  def setup(self):
    _check_channels(self.channels)
    if self.downsample not in DOWNSAMPLING:
      raise ValueError(f"downsample={self.downsample!r}; allowed: {', '.join(DOWNSAMPLING)}")
    self.convs = [PatchConv(c, self.kernel_size, circular=self.circular, relu=True,
                            impl=self.conv_impl, dtype=self.dtype) for c in self.channels]
    self.head = nn.Dense(self.num_classes)

  def feature_maps(self, x_NHWC):
    down = {"none": lambda x: x, "stride": stride_downsample, "aps": aps_downsample}[
        self.downsample]
    for i, conv in enumerate(self.convs):
      x_NHWC = conv(x_NHWC)                        # conv + bias + ReLU
      if i == len(self.convs) - 1 or self.downsample == "none":
        continue
      if x_NHWC.shape[1] % 2 or x_NHWC.shape[2] % 2:
        raise ValueError(f"downsample={self.downsample!r} needs even map sides after every "
                         f"layer but the last; got {x_NHWC.shape[1]}x{x_NHWC.shape[2]} (use a "
                         f"canvas divisible by {2 ** (len(self.channels) - 1)})")
      x_NHWC = down(x_NHWC)
    return x_NHWC

  def embed(self, x_NHWC):
    maps = self.feature_maps(x_NHWC).astype(jnp.float32)     # pooled and classified in float32
    if self.global_pool:
      return jnp.mean(maps, axis=(1, 2))           # the invariant pooling
    return maps.reshape(x_NHWC.shape[0], -1)

  def classify(self, features):
    return self.head(features)

  def __call__(self, x_NHWC):
    return self.classify(self.embed(x_NHWC))


class CircularCNN(ConvNet):
  """Circular convs (stride 1) + global average pool: exactly invariant to cyclic shifts."""


class FlatCNN(ConvNet):
  """Control: the same convolutions with zero padding and a flatten head (not invariant)."""

  circular: bool = False
  global_pool: bool = False


def _transform_filters(group: groups_lib.Group, g: int, w_KKIO):
  """Spatially transform a (k, k, in, out) filter bank by group element g."""
  k1, k2, i, o = w_KKIO.shape
  return group.act(g, w_KKIO.reshape(1, k1, k2, i * o)).reshape(k1, k2, i, o)


class GroupConv(nn.Module):
  """One group-convolution layer for a group G of rotations/flips of the square.

  ``lifting=True``: input (N, H, W, C) -> output (N, H, W, |G|, F) with
  out[..., g, :] = corr(x, T_g psi).
  Otherwise input (N, H, W, |G|, C): out[..., g, :] = sum_h corr(x[..., h, :], T_g psi[g^-1 h]).
  Both are equivariant: transforming the input by u transforms space by u and the group axis by
  g -> u^-1 g. Odd kernels and zero "SAME" padding on square inputs keep this exact.
  """

  group: groups_lib.Group
  features: int
  kernel_size: int = 3
  lifting: bool = False
  dtype: Optional[Any] = None        # computation dtype (parameters float32)

  @nn.compact
  def __call__(self, x):
    order = self.group.order
    k = self.kernel_size
    if self.lifting:
      n, h, w, c = x.shape
      psi = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, self.features))
      bank = jnp.concatenate([_transform_filters(self.group, g, psi) for g in range(order)], axis=-1)
      x_in = x
    else:
      n, h, w, _, c = x.shape
      psi = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                                  in_axis=(0, 1, 2, 3), out_axis=4),
                       (k, k, order, c, self.features))
      table = self.group.compose_table()
      inverse = np.argmax(table == 0, axis=1)
      blocks = []
      for g in range(order):
        perm = table[inverse[g]]                         # h -> g^-1 h
        psi_g = psi[:, :, perm].reshape(k, k, order * c, self.features)
        blocks.append(_transform_filters(self.group, g, psi_g))
      bank = jnp.concatenate(blocks, axis=-1)           # k, k, |G|*C, |G|*F
      x_in = x.reshape(n, h, w, order * c)
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    dt = self.dtype or x_in.dtype
    y = jax.lax.conv_general_dilated(x_in.astype(dt), bank.astype(dt), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # bias added in float32: its gradient sums over every position (see ``_native_conv``)
    return (y.reshape(n, h, w, order, self.features).astype(bias.dtype) + bias).astype(dt)


class GroupCNN(nn.Module):
  """p4 / p4m net: lifting conv, group convs, then group pooling (mean over space and G)."""

  group_name: str = "rotations"      # "rotations" (p4) or "dihedral" (p4m)
  channels: Sequence[int] = ()        # required: the studies' configs hold the sizes
  kernel_size: int = 3
  num_classes: int = 10
  dtype: Optional[Any] = None        # computation dtype (see module docstring)

  def setup(self):
    if self.kernel_size % 2 != 1:
      raise ValueError(f"kernel_size={self.kernel_size}; allowed: odd sizes (exact equivariance "
                       "of 'SAME' padding under rotations needs a centre tap)")
    if self.group_name not in ("rotations", "dihedral"):
      raise ValueError(f"group_name={self.group_name!r}; allowed: 'rotations' (p4), 'dihedral' (p4m)")
    _check_channels(self.channels)
    group = groups_lib.Rotations() if self.group_name == "rotations" else groups_lib.Dihedral()
    self.layers = [GroupConv(group, c, self.kernel_size, lifting=(i == 0), dtype=self.dtype)
                   for i, c in enumerate(self.channels)]
    self.head = nn.Dense(self.num_classes)

  def embed(self, x_NHWC):
    if x_NHWC.shape[1] != x_NHWC.shape[2]:
      raise ValueError(f"GroupCNN needs square inputs, got {x_NHWC.shape[1]}x{x_NHWC.shape[2]}")
    h = x_NHWC
    for layer in self.layers:
      h = nn.relu(layer(h))
    return jnp.mean(h.astype(jnp.float32), axis=(1, 2, 3))   # group pooling: space and G

  def classify(self, features):
    return self.head(features)

  def __call__(self, x_NHWC):
    return self.classify(self.embed(x_NHWC))
