"""The translation orbit of a dense first layer, by real-DFT matmuls, with a hand-written backward.

    shift_responses(x_NHWC, kernel_HWCF, bias_F) -> (N, H*W, F)
    orbit_mean(x_NHWC, kernel_HWCF, bias_F, rest) -> (N, F)

``shift_responses``: the dense layer's pre-activations for every cyclic shift of the input, row
``dy*W + dx`` for ``roll(x, (dy, dx))``: a circular cross-correlation of x with the kernel,
out[d] = sum_u x[u] k[u + d]. ``orbit_mean``: the mean over every shift of the MLP
``relu(...relu(relu(first(shift)) W_1 + b_1)...)`` with ``rest = [(W_i, b_i), ...]``, in chunks of
images that stay in cache, with a ``jax.custom_vjp`` that keeps only each matmul's input (its sign
is ReLU's mask). Used by ``encoders.MLP`` (``embed_translation_orbit``,
``translation_orbit_mean``).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# XLA:CPU's FFT is slow and memory-bound, so the circular cross-correlation is done with matmuls:
#   * a real DFT along W (cos / -sin rows for k = 0..W//2) of the image and of the kernel;
#   * per frequency, the correlation along H as one matmul against a circulant of the image
#     (rows (n, dy), contraction (re/im, v, c)) -> Q: the W real coefficients (13 re + 11 im for
#     W = 24) of every response;
#   * the inverse real DFT along W as a (W x W) matmul that writes rows in (dx, n, dy) order, the
#     layout the next Dense consumes with no transpose.
# Exact up to float rounding: out[dx] = 1/W sum_k c_k Re(conj(X_k) K_k e^{2 pi i k dx / W}).


def _dft_constants(h: int, w: int):
  kf = np.arange(w // 2 + 1)
  ang = 2 * np.pi * np.outer(kf, np.arange(w)) / w
  cos_m, sin_m = np.cos(ang), -np.sin(ang)                     # X_k = sum_u x_u e^{-i ang}
  k_im = kf[(kf > 0) & (2 * kf != w)]                          # frequencies with an imaginary part
  row_k = np.concatenate([kf, k_im])                           # W rows: re parts, then im parts
  row_im = np.concatenate([np.zeros(kf.size, bool), np.ones(k_im.size, bool)])
  c = np.where((kf == 0) | (2 * kf == w), 1.0, 2.0)
  dx = np.arange(w)
  minv = np.concatenate([c * np.cos(2 * np.pi * np.outer(dx, kf) / w),
                         -2.0 * np.sin(2 * np.pi * np.outer(dx, k_im) / w)], axis=1) / w
  circ = (np.arange(h)[None, :] - np.arange(h)[:, None]) % h   # [dy, v] -> v - dy
  return (cos_m.astype(np.float32), sin_m.astype(np.float32), row_k, row_im,
          minv.astype(np.float32), circ)


def _shift_lhs(x_NHWC):
  """(W rows, N, H, 2*H*C): the image's W-DFT, circulant along H."""
  n, h, w, c = x_NHWC.shape
  cos_m, sin_m, row_k, _, _, circ = _dft_constants(h, w)
  xr = jnp.einsum("nuxc,kx->nkuc", x_NHWC, cos_m)
  xi = jnp.einsum("nuxc,kx->nkuc", x_NHWC, sin_m)
  xx = jnp.stack([xr, xi], axis=2)[:, :, :, circ]              # n, k, part, dy, v, c
  xx = xx.transpose(1, 0, 3, 2, 4, 5)[row_k]                   # rows, n, dy, part, v, c
  return xx.reshape(w, n, h, 2 * h * c)


def _shift_rhs(kernel_HWCF):
  """(W rows, 2*H*C, F): the kernel's W-DFT, combined so that lhs @ rhs = conj(X) K per row."""
  h, w, c, f = kernel_HWCF.shape
  cos_m, sin_m, row_k, row_im, _, _ = _dft_constants(h, w)
  kr = jnp.einsum("vxcf,kx->kvcf", kernel_HWCF, cos_m)[row_k]
  ki = jnp.einsum("vxcf,kx->kvcf", kernel_HWCF, sin_m)[row_k]
  im = jnp.asarray(row_im)[:, None, None, None]
  # re: Xr Kr + Xi Ki ; im: Xr Ki - Xi Kr
  return jnp.stack([jnp.where(im, ki, kr), jnp.where(im, -kr, ki)], axis=1).reshape(w, 2 * h * c, f)


def _shift_responses(lhs, rhs, minv, bias):
  """Pre-activations of every shift: (W[dx], n, H[dy], F)."""
  w, n, h, k = lhs.shape
  f = rhs.shape[-1]
  q = jnp.matmul(lhs.reshape(w, n * h, k), rhs)                # W rows, n*H, F
  return jnp.matmul(minv, q.reshape(w, n * h * f)).reshape(w, n, h, f) + bias


def _image_chunks(a, nb):
  """(W, N, ...) -> (nb, W, N // nb, ...)."""
  return a.reshape((a.shape[0], nb, a.shape[1] // nb) + a.shape[2:]).swapaxes(0, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _orbit_mean(lhs, rhs, minv, bias, rest, nb):
  """mean over all shifts of relu(...relu(first(shift)) W_i + b_i...), in ``nb`` chunks of images,
  so every per-shift activation stays in cache. -> (N, F)."""
  return _orbit_mean_fwd(lhs, rhs, minv, bias, rest, nb)[0]


def _orbit_mean_fwd(lhs, rhs, minv, bias, rest, nb):
  def body(_, lhs_c):
    o = _shift_responses(lhs_c, rhs, minv, bias)
    w, nc, h, f = o.shape
    z = nn.relu(o).reshape(w * nc * h, f)
    saved = [z]                                   # each matmul input; its sign is relu's mask
    for i, (kernel, b) in enumerate(rest):
      zp = z @ kernel + b
      z = nn.relu(zp)
      saved.append(z if i < len(rest) - 1 else zp > 0)
    return None, (z.reshape(w, nc, h, -1).mean(axis=(0, 2)), saved)

  _, (feats, saved) = jax.lax.scan(body, None, _image_chunks(lhs, nb))
  return feats.reshape(lhs.shape[1], -1), (lhs, rhs, minv, bias, rest, saved)


def _orbit_mean_bwd(nb, res, g):
  lhs, rhs, minv, bias, rest, saved = res
  w, n, h, k = lhs.shape
  g_chunks = g.reshape(nb, n // nb, -1) / (w * h)

  def body(acc, inp):
    d_rhs, d_bias, d_ws, d_bs = acc
    lhs_c, g_c, sv = inp
    nc = g_c.shape[0]
    last_mask = sv[-1] if rest else sv[0] > 0
    dz = (last_mask.reshape(w, nc, h, -1) * g_c[None, :, None, :]).reshape(w * nc * h, -1)
    d_ws, d_bs = list(d_ws), list(d_bs)
    for i in reversed(range(len(rest))):
      z_in, (kernel, _) = sv[i], rest[i]
      d_ws[i] = d_ws[i] + z_in.T @ dz
      d_bs[i] = d_bs[i] + dz.sum(0)
      dz = (dz @ kernel.T) * (z_in > 0)
    f = dz.shape[-1]
    dq = (minv.T @ dz.reshape(w, nc * h * f)).reshape(w, nc * h, f)
    d_rhs = d_rhs + jnp.matmul(lhs_c.reshape(w, nc * h, k).swapaxes(1, 2), dq)
    d_lhs = jnp.matmul(dq, rhs.swapaxes(1, 2)).reshape(w, nc, h, k)   # dead code unless d/dx
    return (d_rhs, d_bias + dz.sum(0), tuple(d_ws), tuple(d_bs)), d_lhs

  acc = (jnp.zeros_like(rhs), jnp.zeros_like(bias), tuple(jnp.zeros_like(kr) for kr, _ in rest),
         tuple(jnp.zeros_like(b) for _, b in rest))
  (d_rhs, d_bias, d_ws, d_bs), d_lhs = jax.lax.scan(body, acc, (_image_chunks(lhs, nb), g_chunks,
                                                             saved))
  d_lhs = d_lhs.swapaxes(0, 1).reshape(lhs.shape)
  return (d_lhs, d_rhs, jnp.zeros_like(minv), d_bias,
          [(a, b) for a, b in zip(d_ws, d_bs)])


_orbit_mean.defvjp(lambda *a: _orbit_mean_fwd(*a[:5], a[5]), _orbit_mean_bwd)

_ROWS_PER_CHUNK = 1152     # shifted copies per scan step (2 images of 24 x 24): fits in cache


def _num_chunks(n: int, order: int) -> int:
  per = max(1, _ROWS_PER_CHUNK // order)
  per = max(d for d in range(1, min(per, n) + 1) if n % d == 0)
  return n // per


def shift_responses(x_NHWC, kernel_HWCF, bias_F):
  """Pre-activations of the dense layer ``kernel`` for every cyclic shift of x: (N, H*W, F)."""
  n, h, w, _ = x_NHWC.shape
  minv = jnp.asarray(_dft_constants(h, w)[4])
  out = _shift_responses(_shift_lhs(x_NHWC), _shift_rhs(kernel_HWCF), minv, bias_F)  # W, N, H, F
  return out.transpose(1, 2, 0, 3).reshape(n, h * w, kernel_HWCF.shape[-1])


def orbit_mean(x_NHWC, kernel_HWCF, bias_F, rest):
  """Mean over all H*W cyclic shifts of the ReLU MLP (first layer ``kernel``, then ``rest``, a
  list of (kernel, bias)): (N, F), with the hand-written backward pass."""
  n, h, w, _ = x_NHWC.shape
  minv = jnp.asarray(_dft_constants(h, w)[4])
  return _orbit_mean(_shift_lhs(x_NHWC), _shift_rhs(kernel_HWCF), minv, bias_F, list(rest),
                     _num_chunks(n, h * w))
