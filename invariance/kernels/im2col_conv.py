"""Convolution as chunked im2col matmuls with a hand-written gradient (the XLA:CPU path).

    patch_conv(x_NHWC, kernel_KKIO, bias_O, wrap, relu) -> (N, H, W, O)

Cross-correlation, stride 1, odd k, wrap-around (``wrap``) or zero "SAME" padding, plus bias, then
ReLU (``relu``), over chunks of images so the patches, the bias and the ReLU stay in cache
(docs/benchmarks.md). The backward pass builds one patch matrix of the output cotangent for both the
input and the kernel gradient, and skips the input gradient of the data's layer. Used by
``encoders.PatchConv``; equal in values and gradients to XLA's convolution (tests/test_encoders.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

def _pad_axis(x, p: int, axis: int, wrap: bool):
  """``p`` rows of padding on both ends of ``axis``: wrapped around (``wrap``) or zeros."""
  widths = [(0, 0)] * x.ndim
  widths[axis] = (p, p)
  return jnp.pad(x, widths, mode="wrap" if wrap else "constant")


def _patches(x_NHWC, k: int, wrap: bool = True):
  """im2col: (N, H, W, k*k*C), tap (i, j) = x[y + i - k//2, x + j - k//2] (wrapped or zero).

  Built in two passes, each a stack of slices of a once-padded copy: the k horizontal taps
  (N, H, W, k, C), then the k vertical taps of those. XLA:CPU copies these as contiguous runs;
  a single concatenation of k*k rolled copies compiles to a slower element-wise loop."""
  n, h, w, c = x_NHWC.shape
  p = k // 2
  xw = _pad_axis(x_NHWC, p, 2, wrap)
  rows = jnp.stack([xw[:, :, j:j + w] for j in range(k)], 3)
  rows = _pad_axis(rows, p, 1, wrap)
  return jnp.stack([rows[:, i:i + h] for i in range(k)], 3).reshape(n, h, w, k * k * c)


_IMAGES_PER_CHUNK = 8      # 8 x 24 x 24 patch rows of 9 * 32 floats per matmul (see docs/benchmarks.md)


def _batch_chunks(n: int) -> int:
  return n // max(d for d in range(1, min(_IMAGES_PER_CHUNK, n) + 1) if n % d == 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _patch_conv(x_NHWC, kernel_KKIO, bias_O, nb, wrap, relu):
  """Cross-correlation (stride 1, odd k, wrap-around or zero "SAME" padding) plus bias, then ReLU
  (``relu``), as im2col matmuls over ``nb`` chunks of images, so the patches, the bias and the
  ReLU stay in cache."""
  k, _, _, o = kernel_KKIO.shape
  w = kernel_KKIO.reshape(-1, o)

  def chunk(xc):
    y = _patches(xc, k, wrap) @ w + bias_O
    return jnp.maximum(y, 0) if relu else y

  y = jax.lax.map(chunk, x_NHWC.reshape((nb, -1) + x_NHWC.shape[1:]))
  return y.reshape(x_NHWC.shape[:3] + (o,))


def _patch_conv_fwd(x_NHWC, kernel_KKIO, bias_O, nb, wrap, relu):
  # symbolic_zeros: the primals come wrapped, with ``perturbed`` telling whether a gradient can
  # flow into them; the input gradient is skipped for data (the first layer), a third of its cost.
  x, kernel, bias = x_NHWC.value, kernel_KKIO.value, bias_O.value
  y = _patch_conv(x, kernel, bias, nb, wrap, relu)
  return y, (x, kernel, y if relu else None, x_NHWC.perturbed,
             kernel_KKIO.perturbed or bias_O.perturbed)


def _patch_conv_bwd(nb, wrap, relu, res, dy):
  # One patch matrix of dy serves both gradients. With P = patches(dy), block t holding
  # dy[q + off_t]: dx = P @ (the flipped, transposed kernel), and dW_t = sum_p x[p + off_t]^T dy[p]
  # = sum_q x[q]^T dy[q - off_t] = (x^T P)'s block for the opposite offset, k*k - 1 - t (the
  # padding, wrapped or zero, is the same on both sides of that substitution).
  x, kernel, y, need_dx, need_dw = res
  if isinstance(dy, jax.custom_derivatives.SymbolicZero):
    return None, None, None
  k, _, i, o = kernel.shape
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * o, i)

  def body(acc, inp):
    dw, db = acc
    xc, dyc = inp[:2]
    if relu:
      dyc = jnp.where(inp[2] > 0, dyc, 0)
    db = db + dyc.reshape(-1, o).sum(0)
    if not need_dx:          # the data's layer: patches of its few input channels are cheaper
      return (dw + _patches(xc, k, wrap).reshape(-1, k * k * i).T @ dyc.reshape(-1, o), db), None
    p = _patches(dyc, k, wrap).reshape(-1, k * k * o)
    if need_dw:
      dw = dw + _from_dy_patches(xc.reshape(-1, i).T @ p, k)
    return (dw, db), (p @ flipped).reshape(xc.shape)

  chunk = lambda a: a.reshape((nb, -1) + a.shape[1:])
  zeros = (jnp.zeros((k * k * i, o), kernel.dtype), jnp.zeros((o,), kernel.dtype))
  (dw, db), dx = jax.lax.scan(body, zeros, (chunk(x), chunk(dy)) + ((chunk(y),) if relu else ()))
  return ((dx.reshape(x.shape) if need_dx else None),
          *((dw.reshape(kernel.shape), db) if need_dw else (None, None)))


def _from_dy_patches(xt_p, k: int):
  """(I, k*k*O) = x^T patches(dy) -> dW as (k*k*I, O): block t is dW for the opposite tap."""
  i, o = xt_p.shape[0], xt_p.shape[1] // (k * k)
  return xt_p.reshape(i, k * k, o)[:, ::-1].transpose(1, 0, 2).reshape(k * k * i, o)


_patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd, symbolic_zeros=True)


def patch_conv(x_NHWC, kernel_KKIO, bias_O, wrap: bool, relu: bool):
  """The convolution above, over chunks of at most ``_IMAGES_PER_CHUNK`` images."""
  return _patch_conv(x_NHWC, kernel_KKIO, bias_O, _batch_chunks(x_NHWC.shape[0]), wrap, relu)
