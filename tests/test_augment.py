"""Fourier shifts against direct computations: an integer shift is np.roll by the same (dy, dx);
a half-pixel shift of a sampled cosine is the cosine sampled half a pixel later."""
import jax.numpy as jnp
import numpy as np

from invariance import augment


def test_integer_fourier_shifts_are_rolls_in_the_same_direction():
  x = np.random.default_rng(0).normal(size=(3, 6, 8, 2)).astype(np.float32)
  shifts = np.array([[1, 2], [0, -3], [5, 0]], np.float32)
  got = np.asarray(augment.fourier_shift(jnp.asarray(x), jnp.asarray(shifts)))
  for n, (dy, dx) in enumerate(shifts.astype(int)):
    np.testing.assert_allclose(got[n], np.roll(x[n], (dy, dx), axis=(0, 1)), atol=1e-5)


def test_a_half_pixel_shift_of_a_band_limited_wave():
  w = 8
  u = np.arange(w)
  wave = np.cos(2 * np.pi * u / w)                            # frequency 1 of 8: band-limited
  x = np.broadcast_to(wave, (4, w))[None, :, :, None].astype(np.float32)
  got = np.asarray(augment.fourier_shift(jnp.asarray(x), jnp.array([[0.0, 0.5]])))
  np.testing.assert_allclose(got[0, 0, :, 0], np.cos(2 * np.pi * (u - 0.5) / w), atol=1e-5)
