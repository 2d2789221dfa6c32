"""Encoders (Flax linen). Each exposes ``embed`` (penultimate features) and ``classify`` (the head),
and ``__call__ = classify(embed(x))``, so orbit averaging can wrap the feature extractor.

* ``MLP``           - no invariance. Its first layer is a ``FlatDense`` so the orbit module can
                      compute its responses to every cyclic shift at once (see ``orbit.py``).
* ``CircularCNN``   - circular padding, stride 1, global average pool: hard invariance to cyclic
                      translations (the pool is the operation that makes it invariant).
* ``FlatCNN``       - the control: same convolutions, zero padding, flatten head. Not invariant.
* ``GroupCNN``      - p4 (``group="rotations"``) or p4m (``group="dihedral"``) group convolutions
                      with group pooling: hard C4 / D4 invariance on square inputs.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invariance import groups as groups_lib


class FlatDense(nn.Module):
  """Dense layer on the flattened image whose kernel keeps the image layout (H, W, C, F)."""

  features: int

  def __call__(self, x_NHWC):
    kernel, bias = self.params_for(x_NHWC.shape[1:])
    return jnp.einsum("nhwc,hwcf->nf", x_NHWC, kernel) + bias

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
    ``roll(x, (dy, dx))``. A circular cross-correlation of x with the kernel, computed by FFT:
    out[d] = sum_u x[u] k[u + d]  =>  FFT(out) = conj(FFT(x)) * FFT(k) (summed over channels)."""
    n, h, w, _ = x_NHWC.shape
    kernel, bias = self.params_for(x_NHWC.shape[1:])
    x_f = jnp.fft.rfft2(x_NHWC, axes=(1, 2))                 # N, H, W//2+1, C
    k_f = jnp.fft.rfft2(kernel, axes=(0, 1))                  # H, W//2+1, C, F
    prod = jnp.einsum("nhwc,hwcf->nfhw", jnp.conj(x_f), k_f)  # N, F, H, W//2+1
    out = jnp.fft.irfft2(prod, s=(h, w), axes=(2, 3))         # N, F, H, W
    return out.reshape(n, self.features, h * w).transpose(0, 2, 1) + bias


class MLP(nn.Module):
  hidden: Sequence[int] = (256, 256)
  num_classes: int = 10

  def setup(self):
    self.first = FlatDense(self.hidden[0])
    self.rest = [nn.Dense(h) for h in self.hidden[1:]]
    self.head = nn.Dense(self.num_classes)

  def _after_first(self, h):
    h = nn.relu(h)
    for layer in self.rest:
      h = nn.relu(layer(h))
    return h

  def embed(self, x_NHWC):
    return self._after_first(self.first(x_NHWC))

  def embed_translation_orbit(self, x_NHWC):
    """Features of every cyclic shift of x: (N, H*W, F); the first layer by FFT."""
    return self._after_first(self.first.all_shifts(x_NHWC))

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


class CircularCNN(nn.Module):
  """Circular convs (stride 1) + global average pool: exactly invariant to cyclic shifts."""

  channels: Sequence[int] = (32, 32, 32)
  kernel_size: int = 3
  num_classes: int = 10

  def setup(self):
    self.convs = [nn.Conv(c, (self.kernel_size,) * 2, padding="VALID") for c in self.channels]
    self.head = nn.Dense(self.num_classes)

  def feature_maps(self, x_NHWC):
    pad = self.kernel_size // 2
    for conv in self.convs:
      x_NHWC = nn.relu(conv(circular_pad(x_NHWC, pad)))
    return x_NHWC

  def embed(self, x_NHWC):
    return jnp.mean(self.feature_maps(x_NHWC), axis=(1, 2))   # the invariant pooling

  def classify(self, features):
    return self.head(features)

  def __call__(self, x_NHWC):
    return self.classify(self.embed(x_NHWC))


class FlatCNN(nn.Module):
  """Control: the same convolutions with zero padding and a flatten head (not invariant)."""

  channels: Sequence[int] = (32, 32, 32)
  kernel_size: int = 3
  num_classes: int = 10

  def setup(self):
    self.convs = [nn.Conv(c, (self.kernel_size,) * 2, padding="SAME") for c in self.channels]
    self.head = nn.Dense(self.num_classes)

  def feature_maps(self, x_NHWC):
    for conv in self.convs:
      x_NHWC = nn.relu(conv(x_NHWC))
    return x_NHWC

  def embed(self, x_NHWC):
    return self.feature_maps(x_NHWC).reshape(x_NHWC.shape[0], -1)

  def classify(self, features):
    return self.head(features)

  def __call__(self, x_NHWC):
    return self.classify(self.embed(x_NHWC))


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
    y = jax.lax.conv_general_dilated(x_in, bank, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(n, h, w, order, self.features) + bias


class GroupCNN(nn.Module):
  """p4 / p4m net: lifting conv, group convs, then group pooling (mean over space and G)."""

  group_name: str = "rotations"      # "rotations" (p4) or "dihedral" (p4m)
  channels: Sequence[int] = (16, 16, 16)
  kernel_size: int = 3
  num_classes: int = 10

  def setup(self):
    if self.group_name not in ("rotations", "dihedral"):
      raise ValueError(f"group_name={self.group_name!r}; allowed: 'rotations' (p4), 'dihedral' (p4m)")
    group = groups_lib.Rotations() if self.group_name == "rotations" else groups_lib.Dihedral()
    self.layers = [GroupConv(group, c, self.kernel_size, lifting=(i == 0))
                   for i, c in enumerate(self.channels)]
    self.head = nn.Dense(self.num_classes)

  def embed(self, x_NHWC):
    if x_NHWC.shape[1] != x_NHWC.shape[2]:
      raise ValueError(f"GroupCNN needs square inputs, got {x_NHWC.shape[1]}x{x_NHWC.shape[2]}")
    h = x_NHWC
    for layer in self.layers:
      h = nn.relu(layer(h))
    return jnp.mean(h, axis=(1, 2, 3))     # group pooling: space and the group axis

  def classify(self, features):
    return self.head(features)

  def __call__(self, x_NHWC):
    return self.classify(self.embed(x_NHWC))
