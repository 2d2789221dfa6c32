"""The custom-gradient kernels against float64 numpy references written from their definitions:
every cyclic shift of a dense layer, the MLP's translation-orbit mean (values and gradients at
several depths), and the im2col convolution (wrap-around and zero padding)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariance.kernels import im2col_conv
from invariance.kernels import translation_orbit

RNG = np.random.default_rng(0)


def _np_mlp_orbit_mean(x, kernel, bias, rest):
  """float64: mean over every roll (dy, dx) of relu(...relu(dense(roll(x)))...)."""
  n, h, w, _ = x.shape
  feats = []
  for dy in range(h):
    for dx in range(w):
      z = np.maximum(np.einsum("nhwc,hwcf->nf", np.roll(x, (dy, dx), axis=(1, 2)), kernel) + bias, 0)
      for k, b in rest:
        z = np.maximum(z @ k + b, 0)
      feats.append(z)
  return np.mean(feats, axis=0)


def _inputs(widths, n=4, h=5, w=6, c=2):
  f64 = lambda *s: RNG.normal(size=s)
  x, kernel, bias = f64(n, h, w, c), f64(h, w, c, widths[0]) / 4, f64(widths[0]) / 4
  rest = [(f64(a, b) / 2, f64(b) / 4) for a, b in zip(widths[:-1], widths[1:])]
  return x, kernel, bias, rest


def _f32(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def test_shift_responses_are_the_dense_layer_on_every_roll():
  x, kernel, bias, _ = _inputs((3,))
  got = np.asarray(jax.jit(translation_orbit.shift_responses)(*_f32((x, kernel, bias))))
  h, w = x.shape[1:3]
  for dy in range(h):
    for dx in range(w):
      want = np.einsum("nhwc,hwcf->nf", np.roll(x, (dy, dx), axis=(1, 2)), kernel) + bias
      np.testing.assert_allclose(got[:, dy * w + dx], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("widths", [(5,), (5, 4), (5, 4, 3)])
def test_orbit_mean_values_and_gradients_at_several_depths(widths):
  """Values against the float64 numpy orbit; gradients of a random linear read-out (w.r.t. the
  input, every kernel and bias) against autodiff of the same orbit written as one gather with the
  index maps of np.roll (map[dy, dx] = np.roll(arange(H*W).reshape(H, W), (dy, dx))), and against
  float64 central differences along a random direction."""
  x, kernel, bias, rest = _inputs(widths)
  args = _f32((x, kernel, bias, rest))
  read_out = jnp.asarray(RNG.normal(size=(x.shape[0], widths[-1])), jnp.float32)

  n, h, w, c = x.shape
  index_maps = np.stack([np.roll(np.arange(h * w).reshape(h, w), (dy, dx), axis=(0, 1))
                         for dy in range(h) for dx in range(w)])          # G, H, W

  def by_rolls(x, kernel, bias, rest):
    rolled = x.reshape(n, h * w, c)[:, index_maps]                        # N, G, H, W, C
    z = jax.nn.relu(jnp.einsum("nghwc,hwcf->gnf", rolled, kernel) + bias)
    for k, b in rest:
      z = jax.nn.relu(z @ k + b)
    return jnp.sum(z.mean(0) * read_out)

  fast = lambda *a: jnp.sum(translation_orbit.orbit_mean(*a) * read_out)
  # values and both gradients in one compiled program
  got, g_fast, g_ref = jax.jit(lambda *a: (translation_orbit.orbit_mean(*a),
                                           jax.grad(fast, argnums=(0, 1, 2, 3))(*a),
                                           jax.grad(by_rolls, argnums=(0, 1, 2, 3))(*a)))(*args)
  np.testing.assert_allclose(got, _np_mlp_orbit_mean(x, kernel, bias, rest), rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_fast, g_ref)

  # float64 central difference of the numpy orbit along a random direction of every argument
  direction = jax.tree.map(lambda a: RNG.normal(size=np.shape(a)), (x, kernel, bias, rest))
  value = lambda t: float(np.sum(_np_mlp_orbit_mean(*t) * np.asarray(read_out, np.float64)))
  eps = 1e-5
  step = lambda s: jax.tree.map(lambda a, d: np.asarray(a, np.float64) + s * d,
                                (x, kernel, bias, rest), direction)
  numeric = (value(step(eps)) - value(step(-eps))) / (2 * eps)
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d))
                 for g, d in zip(jax.tree.leaves(g_fast), jax.tree.leaves(direction)))
  assert analytic == pytest.approx(numeric, rel=1e-3, abs=1e-3)


def test_control_a_wrong_gradient_is_caught_by_the_same_check():
  """The finite-difference check rejects the gradient of a different (unshifted) function."""
  x, kernel, bias, rest = _inputs((5, 4))
  read_out = RNG.normal(size=(x.shape[0], 4))
  value = lambda t: float(np.sum(_np_mlp_orbit_mean(*t) * read_out))
  plain = lambda x, kernel, bias, rest: jnp.sum(
      jax.nn.relu(jax.nn.relu(jnp.einsum("nhwc,hwcf->nf", x, kernel) + bias) @ rest[0][0]
                  + rest[0][1]) * read_out)
  g_wrong = jax.jit(jax.grad(plain, argnums=(0, 1, 2, 3)))(*_f32((x, kernel, bias, rest)))
  direction = jax.tree.map(lambda a: RNG.normal(size=np.shape(a)), (x, kernel, bias, rest))
  step = lambda s: jax.tree.map(lambda a, d: a + s * d, (x, kernel, bias, rest), direction)
  numeric = (value(step(1e-5)) - value(step(-1e-5))) / 2e-5
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d))
                 for g, d in zip(jax.tree.leaves(g_wrong), jax.tree.leaves(direction)))
  assert analytic != pytest.approx(numeric, rel=1e-3, abs=1e-3)


def _np_conv(x, kernel, bias, wrap, relu):
  """float64 cross-correlation, stride 1, odd k, centre tap at k // 2."""
  k = kernel.shape[0]
  p = k // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="wrap" if wrap else "constant")
  h, w = x.shape[1:3]
  y = sum(np.einsum("nhwi,io->nhwo", xp[:, i:i + h, j:j + w], kernel[i, j])
          for i in range(k) for j in range(k)) + bias
  return np.maximum(y, 0) if relu else y


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("k", [3, 5])
def test_patch_conv_against_a_direct_float64_convolution(wrap, k):
  """Values and gradients (input, kernel, bias; ReLU on) of the im2col conv against float64
  numpy; 11 images make several chunks of unequal images per chunk impossible (11 is prime:
  11 chunks of one)."""
  x, kernel, bias = RNG.normal(size=(11, 6, 7, 2)), RNG.normal(size=(k, k, 2, 3)), RNG.normal(size=3)
  read_out = RNG.normal(size=x.shape[:3] + (3,))
  fast = lambda *a: jnp.sum(im2col_conv.patch_conv(*a, wrap, True) * read_out)
  # the values and the gradients in one compiled program
  got, grads = jax.jit(lambda *a: (im2col_conv.patch_conv(*a, wrap, True),
                                   jax.grad(fast, argnums=(0, 1, 2))(*a)))(*_f32((x, kernel, bias)))
  np.testing.assert_allclose(got, _np_conv(x, kernel, bias, wrap, True), rtol=1e-4, atol=1e-4)
  direction = [RNG.normal(size=a.shape) for a in (x, kernel, bias)]
  value = lambda s: float(np.sum(_np_conv(*(a + s * d for a, d in zip((x, kernel, bias), direction)),
                                          wrap, True) * read_out))
  numeric = (value(1e-6) - value(-1e-6)) / 2e-6
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in zip(grads, direction))
  assert analytic == pytest.approx(numeric, rel=1e-4)
  # the control: the other padding is a different function
  assert not np.allclose(got, _np_conv(x, kernel, bias, not wrap, True), atol=1e-3)
