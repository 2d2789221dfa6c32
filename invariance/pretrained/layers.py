"""Transformer pieces shared by the CLIP and SigLIP towers (pre-LN blocks, attention, MAP head).

Attention has separate ``query``/``key``/``value``/``out`` dense layers with ``[width, width]``
kernels: open_clip's packed ``in_proj_weight`` and big_vision's ``[width, heads, head_dim]``
kernels both convert to it. ``dtype`` is the computation dtype (parameters stay as given).
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def activation(name: str):
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name == "gelu_tanh":
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "quick_gelu":
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  raise ValueError(f"activation={name!r}: allowed gelu, quick_gelu, gelu_tanh")


def layer_norm(eps: float, dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


class Attention(nn.Module):
  """Multi-head dot-product attention of ``queries_NQW`` on ``inputs_NTW``; ``mask_QT`` True = keep."""
  heads: int
  dtype: Any = None

  @nn.compact
  def __call__(self, queries_NQW, inputs_NTW, mask_QT: Optional[jax.Array] = None):
    width = inputs_NTW.shape[-1]
    head_dim = width // self.heads
    dense = lambda name: nn.Dense(width, dtype=self.dtype, name=name)  # noqa: E731
    split = lambda x: x.reshape(*x.shape[:-1], self.heads, head_dim)  # noqa: E731
    q_NQHD = split(dense("query")(queries_NQW))
    k_NTHD = split(dense("key")(inputs_NTW))
    v_NTHD = split(dense("value")(inputs_NTW))
    scores_NHQT = jnp.einsum("nqhd,nthd->nhqt", q_NQHD, k_NTHD) / jnp.sqrt(head_dim).astype(q_NQHD.dtype)
    if mask_QT is not None:
      scores_NHQT = jnp.where(mask_QT, scores_NHQT, -jnp.inf)
    weights_NHQT = jax.nn.softmax(scores_NHQT, axis=-1)
    out_NQHD = jnp.einsum("nhqt,nthd->nqhd", weights_NHQT, v_NTHD)
    return dense("out")(out_NQHD.reshape(*out_NQHD.shape[:-2], width))


class Mlp(nn.Module):
  hidden: int
  act: str
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    h = activation(self.act)(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class Settings(nn.Module):
  """The settings every transformer piece here shares (one home for them)."""
  heads: int
  mlp_dim: int
  act: str
  eps: float
  dtype: Any = None


class Block(Settings):
  """Pre-LN residual block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

  @nn.compact
  def __call__(self, x_NTW, mask_TT=None):
    y = layer_norm(self.eps, self.dtype, "ln_1")(x_NTW)
    x_NTW = x_NTW + Attention(self.heads, self.dtype, name="attn")(y, y, mask_TT)
    y = layer_norm(self.eps, self.dtype, "ln_2")(x_NTW)
    return x_NTW + Mlp(self.mlp_dim, self.act, self.dtype, name="mlp")(y)


class Encoder(Block):
  """``layers`` blocks of the block's settings; returns the final tokens and every block's output
  (``[L, N, T, W]``)."""
  layers: int = 1

  @nn.compact
  def __call__(self, x_NTW, mask_TT=None):
    outputs = []
    for i in range(self.layers):
      x_NTW = Block(self.heads, self.mlp_dim, self.act, self.eps, self.dtype, name=f"block_{i}")(
          x_NTW, mask_TT)
      outputs.append(x_NTW)
    return x_NTW, outputs


class MAPHead(Settings):
  """Multihead attention pooling (big_vision): one learned probe attends over the tokens, then a
  residual MLP on its LayerNorm."""

  @nn.compact
  def __call__(self, x_NTW):
    n, _, width = x_NTW.shape
    probe_W = self.param("probe", nn.initializers.normal(0.02), (width,))
    probe_N1W = jnp.broadcast_to(probe_W.astype(x_NTW.dtype), (n, 1, width))
    x_N1W = Attention(self.heads, self.dtype, name="attn")(probe_N1W, x_NTW)
    y = layer_norm(self.eps, self.dtype, "ln")(x_N1W)
    x_N1W = x_N1W + Mlp(self.mlp_dim, self.act, self.dtype, name="mlp")(y)
    return x_N1W[:, 0]
