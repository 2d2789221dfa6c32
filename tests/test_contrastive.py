"""CLIP / SigLIP losses: numpy references, data-parallel variants and rings against the single
device, tiled losses against the materialised ones, the logit-scale clamp, the loss picker.

Every multi-device and every tiled claim goes through one assertion,
``assert_matches_single_device``: value and gradient w.r.t. every argument (embeddings,
temperature / bias) within 1e-5 of the single-device, materialised loss, on 8 virtual CPU devices
(tests/conftest.py) for the parallel ones. The controls feed deliberately wrong losses / gradient
conventions (a text -> image term that sees local images only, a ring whose column statistics stay
home, the classic all-gather with only local rows differentiable, a tiled loss that skips its last
tile, forgets the column term in its backward pass or leaves its padding unmasked) to the same
assertion and expect it to fail.
"""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax import lax

from invariance import contrastive, parallel
from invariance.contrastive import clip_fused, clip_tiled, common, tiles

N_DEV = 8
B, DIM = 32, 16
TOL = 1e-5


# -- data and numpy references ------------------------------------------------------------------
_l2_normalize = jax.jit(contrastive.l2_normalize)     # one program per shape, not one per op


def _embeddings(seed, batch=B, dim=DIM):
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(batch, dim)).astype(np.float32)
  # Texts correlated with their images, so the positives matter in the loss.
  txt = (img + rng.normal(size=(batch, dim))).astype(np.float32)
  return _l2_normalize(jnp.asarray(img)), _l2_normalize(jnp.asarray(txt))


def _np_log_softmax(x, axis):
  m = x.max(axis=axis, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def clip_np(img, txt, log_scale):
  img, txt = np.float64(img), np.float64(txt)
  logits = math.exp(log_scale) * img @ txt.T
  i2t = -np.diag(_np_log_softmax(logits, axis=1)).mean()
  t2i = -np.diag(_np_log_softmax(logits, axis=0)).mean()
  return (i2t + t2i) / 2


def siglip_np(img, txt, t_prime, bias):
  img, txt = np.float64(img), np.float64(txt)
  logits = math.exp(t_prime) * img @ txt.T + bias
  z = 2 * np.eye(len(img)) - 1
  return np.logaddexp(0.0, -z * logits).sum() / len(img)  # -log sigmoid(zx) = softplus(-zx)


# -- single device ------------------------------------------------------------------------------
def test_init_and_normalize():
  np.testing.assert_allclose(contrastive.init_clip_temperature(), math.log(1 / 0.07), rtol=1e-6)
  t_prime, bias = contrastive.init_siglip_params()
  np.testing.assert_allclose([jnp.exp(t_prime), bias], [10.0, -10.0], rtol=1e-6)
  img, _ = _embeddings(0)
  np.testing.assert_allclose(jnp.linalg.norm(img, axis=-1), 1.0, rtol=1e-6)


class SingleDeviceTest(chex.TestCase):
  """Values against the float64 numpy references, jitted and not."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(math.log(1 / 0.07), 0.0, math.log(250.0))
  def test_clip_matches_numpy(self, log_scale):
    img, txt = _embeddings(1)
    loss = self.variant(contrastive.clip_loss)(img, txt, jnp.float32(log_scale))
    np.testing.assert_allclose(loss, clip_np(img, txt, log_scale), rtol=TOL, atol=TOL)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((math.log(10.0), -10.0), (0.0, 0.0), (2.0, 3.0))
  def test_siglip_matches_numpy(self, t_prime, bias):
    img, txt = _embeddings(2)
    loss = self.variant(contrastive.siglip_loss)(img, txt, jnp.float32(t_prime),
                                                 jnp.float32(bias))
    np.testing.assert_allclose(loss, siglip_np(img, txt, t_prime, bias), rtol=TOL, atol=TOL)


# The logit scale is exp(log_scale), unclamped in every loss; the clamp is a projection of the
# parameter (``clip_log_scale_clamp``) that the training loop applies after each update.
PAST_CLAMP = math.log(300.0)


def _old_clamped_clip_loss(img, txt, log_scale):
  """Control: the former convention, min(exp(log_scale), 100) inside the loss."""
  return contrastive.clip_loss(img, txt, jnp.minimum(log_scale, math.log(100.0)))


@pytest.mark.parametrize("loss", ["clip_loss", "control_old_clamp"])
def test_log_scale_gradient_is_alive_past_log_100(loss):
  """Also checked past log 100: clip_loss_fused (FusedClipTest), clip_loss_tiled (TILED_CASES),
  the ring (the data-parallel test's second call)."""
  fn = _old_clamped_clip_loss if loss == "control_old_clamp" else contrastive.clip_loss
  img, txt = _embeddings(3)
  grad = jax.jit(jax.grad(fn, argnums=2))(img, txt, jnp.float32(PAST_CLAMP))
  alive = abs(float(grad)) > 1e-4
  assert alive == (loss != "control_old_clamp"), (loss, grad)


def test_clamp_projects_the_parameter():
  clamp = contrastive.clip_log_scale_clamp
  np.testing.assert_allclose(clamp(jnp.float32(PAST_CLAMP)), math.log(100.0), rtol=1e-7)
  np.testing.assert_allclose(clamp(jnp.float32(1.0)), 1.0)
  np.testing.assert_allclose(contrastive.CLIP_MAX_LOG_SCALE, math.log(100.0))
  np.testing.assert_allclose(contrastive.clip_logit_scale(jnp.float32(PAST_CLAMP)), 300.0,
                             rtol=1e-5)


def test_shapes_are_checked():
  img, txt = _embeddings(4)
  with pytest.raises(AssertionError):
    contrastive.clip_loss(img, txt[:-1], contrastive.init_clip_temperature())
  with pytest.raises(AssertionError):
    contrastive.siglip_loss(img, txt, jnp.zeros((1,)), jnp.float32(0.0))


# -- single device, hand-written backward: clip_loss_fused against clip_loss ----------------------
def _fallback_embeddings(batch=16):
  """Image 0 = text 0 (a logit of ~100 at the scale used); every other text is nearly orthogonal
  to every image, so its column of logits stays near 0, ~100 below the global max: exp of the
  shifted column underflows float32 and the shared-exp column sums cannot be used."""
  rng = np.random.default_rng(5)
  img = np.eye(batch, 2 * batch, dtype=np.float32)
  txt = np.roll(np.eye(batch, 2 * batch, dtype=np.float32), batch, axis=1)
  txt[0] = img[0]
  txt += 0.05 * rng.normal(size=txt.shape).astype(np.float32)
  txt[0] = img[0]
  return _l2_normalize(jnp.asarray(img)), _l2_normalize(jnp.asarray(txt))


@jax.jit
def _fused_exact_branch_flag(img, txt, log_scale):
  return clip_fused._fused_forward(img, txt, contrastive.clip_logit_scale(log_scale))[1][-1]


def _fused_takes_exact_branch(img, txt, log_scale):
  """Whether ``clip_loss_fused``'s forward pass falls back to the exact column logsumexp."""
  return bool(_fused_exact_branch_flag(img, txt, jnp.float32(log_scale)))


@functools.cache
def _value_and_grad3(fn):
  """One gradient function per loss, so the jitted variant compiles once per shape for all tests."""
  return jax.value_and_grad(fn, argnums=(0, 1, 2))


class FusedClipTest(chex.TestCase):
  """``clip_loss_fused`` has the value and the gradients (img, txt, log_scale) of ``clip_loss``."""

  def assert_matches_clip_loss(self, fn, img, txt, log_scale):
    """Value and all three gradients of ``fn`` within 1e-5 of ``clip_loss``'s (jitted)."""
    got = self.variant(_value_and_grad3(fn))(img, txt, log_scale)
    want = _reference_value_and_grad(contrastive.clip_loss, 3)(img, txt, log_scale)
    chex.assert_tree_all_finite(got)
    chex.assert_trees_all_close(got, want, atol=TOL, rtol=TOL)
    return got

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((32, math.log(1 / 0.07), 52), (32, 0.0, 84), (8, math.log(30.0), 28))
  def test_matches_clip_loss(self, batch, log_scale, seed):
    img, txt = _embeddings(seed, batch=batch)
    assert not _fused_takes_exact_branch(img, txt, log_scale)
    _, (_, _, d_log_scale) = self.assert_matches_clip_loss(
        contrastive.clip_loss_fused, img, txt, jnp.float32(log_scale))
    assert abs(d_log_scale) > 1e-4  # the temperature gets a gradient

  @chex.variants(with_jit=True)
  def test_scale_past_100_has_a_gradient(self):
    img, txt = _embeddings(21)
    _, (_, _, d_log_scale) = self.assert_matches_clip_loss(
        contrastive.clip_loss_fused, img, txt, jnp.float32(math.log(250.0)))
    assert abs(d_log_scale) > 1e-4

  @chex.variants(with_jit=True)
  def test_underflowing_columns_take_the_exact_branch(self):
    img, txt = _fallback_embeddings()
    log_scale = math.log(100.0) + 0.1  # scale 110

    @jax.jit
    def shared_exp_col_sums(img, txt, log_scale):
      logits = contrastive.clip_logit_scale(log_scale) * img @ txt.T
      return jnp.exp(logits - logits.max(axis=1, keepdims=True)).T @ jnp.exp(
          logits.max(axis=1) - logits.max())

    col_sums = shared_exp_col_sums(img, txt, jnp.float32(log_scale))
    assert float(col_sums.min()) < 1e-30  # the shared-exp sums alone would be wrong here
    assert _fused_takes_exact_branch(img, txt, log_scale)
    self.assert_matches_clip_loss(contrastive.clip_loss_fused, img, txt, jnp.float32(log_scale))
    np.testing.assert_allclose(jax.jit(contrastive.clip_loss_fused)(img, txt,
                                                                    jnp.float32(log_scale)),
                               clip_np(img, txt, log_scale), rtol=TOL, atol=TOL)

  # Controls: the same comparison rejects a wrong value and a wrong gradient.
  @chex.variants(with_jit=True)
  def test_control_perturbed_value_is_detected(self):
    img, txt = _embeddings(22)
    perturbed = lambda *args: contrastive.clip_loss_fused(*args) * (1 + 1e-4)
    with pytest.raises(AssertionError):
      self.assert_matches_clip_loss(perturbed, img, txt, contrastive.init_clip_temperature())

  @chex.variants(with_jit=True)
  def test_control_perturbed_gradient_is_detected(self):
    img, txt = _embeddings(23)
    # Same value; d/d(log_scale) off by 1e-3.
    perturbed = lambda i, t, s: (contrastive.clip_loss_fused(i, t, s) +
                                 1e-3 * (s - lax.stop_gradient(s)))
    with pytest.raises(AssertionError):
      self.assert_matches_clip_loss(perturbed, img, txt, contrastive.init_clip_temperature())


# -- data parallel: one assertion for every variant ---------------------------------------------
PARAMS = {
    "clip": lambda: (contrastive.init_clip_temperature(),),
    "siglip": lambda: contrastive.init_siglip_params(),
}
REFERENCE = {"clip": contrastive.clip_loss, "siglip": contrastive.siglip_loss}
LOSSES = {"clip": contrastive.clip_loss, "siglip": contrastive.siglip_loss,
          "clip_chunked": contrastive.clip_loss_chunked,
          "siglip_chunked": contrastive.siglip_loss_chunked}


def value_and_grad_fn(transform, per_device_fn, n_args):
  """``f(img, txt, *params) -> (loss, grads)`` in the single-device layout, under ``transform``."""
  argnums = tuple(range(n_args))
  if transform == "single":
    return jax.jit(jax.value_and_grad(per_device_fn, argnums))
  if transform == "shard_map":
    mesh = parallel.data_mesh()
    return jax.jit(jax.value_and_grad(parallel.shard_map_loss(per_device_fn, mesh), argnums))
  if transform == "pmap":
    run = parallel.pmap_value_and_grad(per_device_fn, argnums=argnums)
    return functools.partial(_unpmap, run)
  raise ValueError(transform)


def _unpmap(run, img, txt, *params):
  loss_D, grads = run(*parallel.pmap_shard((img, txt), N_DEV), *params)
  for x_D in (loss_D, *grads[2:]):  # replicated outputs: one identical copy per device
    np.testing.assert_allclose(x_D, jnp.broadcast_to(x_D[0], x_D.shape), rtol=1e-6)
  return loss_D[0], (grads[0].reshape(img.shape), grads[1].reshape(txt.shape),
                     *(g[0] for g in grads[2:]))


@functools.cache
def _reference_value_and_grad(reference, n_args):
  return jax.jit(jax.value_and_grad(reference, tuple(range(n_args))))


# The temperature / bias gradients are sums over all B^2 pairs of terms of size ~ the logit scale
# (up to 100) that nearly cancel: float32 summation order (devices, FMA contraction, which differs
# between XLA's optimisation levels) moves them by ~1e-6 of that scale, so their absolute tolerance
# is relative to the terms summed, not to the small result.
SCALAR_GRAD_ATOL = 1e-4


def assert_matches_single_device(f, reference, args):
  """Value and embedding gradients of ``f`` within 1e-5 of the single-device ``reference``; the
  scalar parameters' gradients within ``SCALAR_GRAD_ATOL`` (+ 1e-5 relative)."""
  want = _reference_value_and_grad(reference, len(args))(*args)
  got = f(*args)
  chex.assert_trees_all_close((got[0], got[1][:2]), (want[0], want[1][:2]), atol=TOL, rtol=TOL)
  chex.assert_trees_all_close(got[1][2:], want[1][2:], atol=SCALAR_GRAD_ATOL, rtol=TOL)
  return got


def test_eight_devices():
  assert jax.device_count() == N_DEV, "tests/conftest.py should force 8 CPU devices"


@pytest.mark.parametrize("transform", ["shard_map", "pmap"])
@pytest.mark.parametrize("loss", ["clip", "siglip", "clip_chunked", "siglip_chunked"])
def test_parallel_matches_single_device_and_compiles_once(loss, transform):
  base = loss.split("_")[0]
  chex.clear_trace_counter()  # the counter is keyed by the wrapped function, shared across tests
  per_device = chex.assert_max_traces(LOSSES[loss], n=1)
  params = PARAMS[base]()
  f = value_and_grad_fn(transform, per_device, 2 + len(params))
  # New data and parameters, same shapes: no retrace. The second call is past CLIP's former clamp
  # (log_scale = 4.66 > log 100) and at a sharp SigLIP temperature (t = 74).
  for seed, shift in ((10, 0.3), (11, 2.0)):
    img, txt = _embeddings(seed)
    shifted = tuple(p + shift for p in params)
    assert_matches_single_device(f, REFERENCE[base], (img, txt, *shifted))


# -- controls: the same assertion catches a wrong loss or a wrong gradient convention -----------
def _clip_local_t2i(img, txt, log_scale, axis_name):
  """Bug: the text -> image direction only sees this device's images."""
  scale = contrastive.clip_logit_scale(log_scale)
  i2t = contrastive.pairwise_logits(img, lax.all_gather(txt, axis_name, tiled=True), scale)
  t2i = contrastive.pairwise_logits(txt, img, scale)
  partial = (jax.nn.logsumexp(i2t, -1).sum() + jax.nn.logsumexp(t2i, -1).sum() -
             2 * contrastive.matched_logits(img, txt, scale).sum())
  return lax.psum(partial, axis_name) / (2 * img.shape[0] * N_DEV)


def _siglip_local_normalisation(img, txt, t_prime, bias, axis_name):
  """Bug: divides by the local batch B/D instead of the global B."""
  return contrastive.siglip_loss(img, txt, t_prime, bias, axis_name) * N_DEV


def _siglip_no_psum(img, txt, t_prime, bias, axis_name):
  """Bug: returns this device's share only (scaled to look like a mean), no psum. Under pmap the
  devices then disagree, which ``_unpmap`` asserts against; under shard_map the missing psum is a
  type error (a varying value for ``out_specs=P()``) before any number is compared."""
  full = lax.all_gather(txt, axis_name, tiled=True)
  part = (jax.nn.softplus(contrastive.pairwise_logits(img, full, jnp.exp(t_prime), bias)).sum() -
          contrastive.matched_logits(img, txt, jnp.exp(t_prime), bias).sum())
  return part / img.shape[0]


def _clip_ring_columns_stay_home(img, txt, log_scale, axis_name):
  """Bug: ``clip_loss_chunked`` with the column statistics kept on the device that computed them
  instead of travelling with their text block: each column's logsumexp mixes blocks of texts."""
  scale = contrastive.clip_logit_scale(log_scale)
  ring = [(d, (d + 1) % N_DEV) for d in range(N_DEV)]
  matched = contrastive.matched_logits(img, txt, scale)
  start = lax.stop_gradient(matched)

  def step(carry, _):
    txt_block, col_max, col_sum, row_max, row_sum = carry
    logits = contrastive.pairwise_logits(img, txt_block, scale)
    row_max, row_sum = common.online_logsumexp(row_max, row_sum, logits, axis=1)
    col_max, col_sum = common.online_logsumexp(col_max, col_sum, logits, axis=0)
    return (lax.ppermute(txt_block, axis_name, ring), col_max, col_sum, row_max, row_sum), None

  carry = (txt, start, 0.0 * start, start, 0.0 * start)
  (_, col_max, col_sum, row_max, row_sum), _ = lax.scan(step, carry, None, length=N_DEV)
  partial = (jnp.sum(row_max + jnp.log(row_sum)) + jnp.sum(col_max + jnp.log(col_sum)) -
             2 * jnp.sum(matched))
  return lax.psum(partial, axis_name) / (2 * img.shape[0] * N_DEV)


def _clip_gather_local_rows_differentiable(img, txt, log_scale, axis_name):
  """The classic all-gather bug: every device gathers both modalities as constants
  (``stop_gradient``), puts its own rows back differentiable, computes the whole B x B loss and
  the devices average it. The value is right; the gradient only flows through local rows, so each
  embedding gets 1/D of its gradient (and the temperature the full one: the scalar is right)."""
  def with_local_rows(x):
    everything = lax.all_gather(lax.stop_gradient(x), axis_name, tiled=True)
    start = lax.axis_index(axis_name) * x.shape[0]
    return lax.dynamic_update_slice_in_dim(everything, x, start, axis=0)

  full = contrastive.clip_loss(with_local_rows(img), with_local_rows(txt), log_scale)
  return lax.pmean(full, axis_name)


@pytest.mark.parametrize("bug,transform", [
    ("clip_local_t2i", "shard_map"),
    ("siglip_local_normalisation", "shard_map"),
    ("siglip_no_psum", "pmap"),
    ("clip_ring_columns_stay_home", "shard_map"),
])
def test_control_wrong_loss_is_detected(bug, transform):
  fn = {"clip_local_t2i": _clip_local_t2i,
        "siglip_local_normalisation": _siglip_local_normalisation,
        "siglip_no_psum": _siglip_no_psum,
        "clip_ring_columns_stay_home": _clip_ring_columns_stay_home}[bug]
  base = bug.split("_")[0]
  params = PARAMS[base]()
  img, txt = _embeddings(12)
  f = value_and_grad_fn(transform, fn, 2 + len(params))
  with pytest.raises(AssertionError):
    assert_matches_single_device(f, REFERENCE[base], (img, txt, *params))


def test_control_raw_pmap_gradient_is_detected():
  """Differentiating inside pmap without ``pmap_value_and_grad``'s 1/D: D x the gradient."""
  params = PARAMS["siglip"]()
  per_device = functools.partial(contrastive.siglip_loss_chunked, axis_name="data")
  raw = jax.pmap(jax.value_and_grad(per_device, (0, 1, 2, 3)), axis_name="data",
                 in_axes=(0, 0, None, None))

  def f(img, txt, *p):
    loss_D, g = raw(*parallel.pmap_shard((img, txt), N_DEV), *p)
    return loss_D[0], (g[0].reshape(img.shape), g[1].reshape(txt.shape), g[2].sum(), g[3].sum())

  img, txt = _embeddings(13)
  with pytest.raises(AssertionError):
    assert_matches_single_device(f, contrastive.siglip_loss, (img, txt, *params))


@pytest.mark.parametrize("transform", ["shard_map", "pmap"])
def test_control_gather_with_only_local_rows_differentiable_is_detected(transform):
  """The value is the global loss, so only the gradient comparison can reject this one: it must."""
  params = PARAMS["clip"]()
  img, txt = _embeddings(14)
  f = value_and_grad_fn(transform, _clip_gather_local_rows_differentiable, 3)
  loss, grads = f(img, txt, *params)
  want_loss, want_grads = _reference_value_and_grad(contrastive.clip_loss, 3)(img, txt, *params)
  chex.assert_trees_all_close(loss, want_loss, atol=TOL, rtol=TOL)  # the value matches
  chex.assert_trees_all_close(grads[0], want_grads[0] / N_DEV, atol=TOL, rtol=TOL)  # 1/D of it
  with pytest.raises(AssertionError):
    assert_matches_single_device(f, contrastive.clip_loss, (img, txt, *params))


# -- tiled losses, single device: value and gradients of the materialised loss -------------------
def tiled_value_and_grad(fn, tile, n_args):
  return jax.jit(jax.value_and_grad(functools.partial(fn, tile=tile), tuple(range(n_args))))


# (batch, tile): 4 full tiles; 3 tiles of which the last is padded (20 = 8 + 8 + 4, masked; 21 =
# 8 + 8 + 5, where the padding, 3, is not the remainder); a tile larger than the batch (one tile).
# Scales: CLIP's initial one and one past log 100.
TILED_CASES = [(32, 8, math.log(1 / 0.07)), (20, 8, PAST_CLAMP), (21, 8, 1.0), (16, 64, 0.0)]


@pytest.mark.parametrize("batch,tile,log_scale", TILED_CASES)
def test_clip_tiled_matches_clip_loss(batch, tile, log_scale):
  img, txt = _embeddings(30 + batch, batch=batch)
  f = tiled_value_and_grad(contrastive.clip_loss_tiled, tile, 3)
  _, (_, _, d_log_scale) = assert_matches_single_device(f, contrastive.clip_loss,
                                                        (img, txt, jnp.float32(log_scale)))
  assert abs(d_log_scale) > 1e-4  # alive at every scale, past log 100 too


@pytest.mark.parametrize("batch,tile,params", [(32, 8, (math.log(10.0), -10.0)),
                                               (20, 8, (2.0, 3.0)), (21, 8, (1.0, -2.0))])
def test_siglip_tiled_matches_siglip_loss(batch, tile, params):
  img, txt = _embeddings(40 + batch, batch=batch)
  f = tiled_value_and_grad(contrastive.siglip_loss_tiled, tile, 4)
  args = (img, txt, *map(jnp.float32, params))
  assert_matches_single_device(f, contrastive.siglip_loss, args)


def test_tiled_gradients_keep_the_embedding_dtype():
  img, txt = jax.ShapeDtypeStruct((20, DIM), jnp.bfloat16), jax.ShapeDtypeStruct((20, DIM),
                                                                                  jnp.bfloat16)
  for fn, params in ((contrastive.clip_loss_tiled, PARAMS["clip"]()),
                     (contrastive.siglip_loss_tiled, PARAMS["siglip"]())):
    grads = jax.eval_shape(jax.grad(functools.partial(fn, tile=8), (0, 1)), img, txt, *params)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


@pytest.mark.parametrize("tile", [0, -8, 2.5, True, "8"])
def test_tile_must_be_a_positive_int(tile):
  img, txt = _embeddings(51, batch=8)
  for call in (lambda: contrastive.clip_loss_tiled(img, txt, jnp.float32(0.0), tile=tile),
               lambda: contrastive.siglip_loss_tiled(img, txt, jnp.float32(0.0), jnp.float32(0.0),
                                                     tile=tile)):
    with pytest.raises(ValueError, match=r"^tile=.*allowed: a positive int") as err:
      call()
    assert "\n" not in str(err.value)


# Controls: the same assertion rejects the mistakes a tiled loss invites.
def _autodiff_tiled_clip(img, txt, log_scale, tile, bug=None):
  """A tiled CLIP by plain autodiff (online row logsumexp, per-tile column logsumexp), right with
  ``bug=None``; ``"skips_last_tile"`` scans all tiles but the last one."""
  scale = contrastive.clip_logit_scale(log_scale)
  tiles = txt.reshape(-1, tile, txt.shape[1])
  tiles = tiles[:-1] if bug == "skips_last_tile" else tiles

  def body(carry, txt_tile):
    logits = contrastive.pairwise_logits(img, txt_tile, scale)
    carry = common.online_logsumexp(*carry, logits, axis=1)
    return carry, jax.nn.logsumexp(logits, axis=0)

  start = (jnp.full(img.shape[:1], -jnp.inf), jnp.zeros(img.shape[:1]))
  (row_max, row_sum), col_lse = lax.scan(body, start, tiles)
  lse_sum = jnp.sum(row_max + jnp.log(row_sum)) + jnp.sum(col_lse)
  return (lse_sum - 2 * contrastive.matched_logits(img, txt, scale).sum()) / (2 * img.shape[0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _tiled_core_backward_forgets_columns(img, txt, scale, tile):
  return clip_tiled._clip_tiled_forward(img, txt, scale, tile)[0]


def _backward_forgets_columns(tile, residuals, g):
  """Bug: the backward pass drops the column softmax (col_max = inf: exp(L - col_max) = 0)."""
  *rest, col_max, col_sum = residuals
  return clip_tiled._clip_tiled_backward(tile, (*rest, jnp.full_like(col_max, jnp.inf), col_sum),
                                          g)


_tiled_core_backward_forgets_columns.defvjp(clip_tiled._clip_tiled_forward,
                                            _backward_forgets_columns)


def _clip_tiled_backward_forgets_columns(img, txt, log_scale, tile):
  """The library's forward (right value) with a backward pass that forgets the column term."""
  scale = contrastive.clip_logit_scale(log_scale)
  lse_sum = _tiled_core_backward_forgets_columns(img, txt, scale, tile)
  return (lse_sum - 2 * contrastive.matched_logits(img, txt, scale).sum()) / (2 * img.shape[0])


@pytest.mark.parametrize("bug", [None, "skips_last_tile", "backward_forgets_columns",
                                 "padding_not_masked"])
def test_control_wrong_tiled_loss_is_detected(bug, monkeypatch):
  """bug=None: the autodiff reference passes (so what fails below fails for the bug alone)."""
  batch, tile = (20, 8) if bug == "padding_not_masked" else (32, 8)
  img, txt = _embeddings(52, batch=batch)
  fn = {None: _autodiff_tiled_clip,
        "skips_last_tile": functools.partial(_autodiff_tiled_clip, bug="skips_last_tile"),
        "backward_forgets_columns": _clip_tiled_backward_forgets_columns,
        "padding_not_masked": contrastive.clip_loss_tiled}[bug]
  if bug == "padding_not_masked":  # padded (zero) text rows scored as real texts
    unmasked = tiles.tile_logits
    monkeypatch.setattr(tiles, "tile_logits",
                        lambda a, b, valid, bias=0.0: unmasked(a, b, None, bias))
  f = tiled_value_and_grad(fn, tile, 3)
  args = (img, txt, contrastive.init_clip_temperature())
  if bug is None:
    assert_matches_single_device(f, contrastive.clip_loss, args)
    return
  with pytest.raises(AssertionError):
    assert_matches_single_device(f, contrastive.clip_loss, args)


# -- choosing the loss by batch size -------------------------------------------------------------
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_loss_by_name_switches_at_the_threshold(name):
  pick = functools.partial(contrastive.loss_by_name, name, tiled_threshold=64, tile=16)
  plain, tiled, ring = {"clip": (contrastive.clip_loss, contrastive.clip_loss_tiled,
                                 contrastive.clip_loss_chunked),
                        "siglip": (contrastive.siglip_loss, contrastive.siglip_loss_tiled,
                                   contrastive.siglip_loss_chunked)}[name]
  single = contrastive.clip_loss_fused if name == "clip" else plain   # same value and gradients
  assert pick(63).func is single
  assert pick(63).keywords == ({} if name == "clip" else {"axis_name": None})
  assert pick(64).func is tiled and pick(64).keywords == {"tile": 16}
  assert pick(64, axis_name="data").func is ring
  assert pick(63, axis_name="data").keywords == {"axis_name": "data"}
  assert contrastive.loss_by_name(name, 10 ** 6, tiled_threshold=0).func is single  # 0: never
  # The picked tiled loss computes the plain one's value (B = 32 at a threshold of 32).
  img, txt = _embeddings(53)
  params = PARAMS[name]()
  small = contrastive.loss_by_name(name, B, tiled_threshold=B, tile=8)
  np.testing.assert_allclose(small(img, txt, *params), plain(img, txt, *params), rtol=TOL)


@pytest.mark.parametrize("arg,kwargs", [
    ("name", dict(name="infonce", batch_size=8)),
    ("batch_size", dict(name="clip", batch_size=0)),
    ("tiled_threshold", dict(name="clip", batch_size=8, tiled_threshold=-1)),
    ("tile", dict(name="siglip", batch_size=8, tile=0)),
])
def test_loss_by_name_rejects_bad_arguments_in_one_line(arg, kwargs):
  with pytest.raises(ValueError, match=f"^{arg}=") as err:
    contrastive.loss_by_name(**kwargs)
  assert "\n" not in str(err.value)


# -- duplicate captions as positives --------------------------------------------------------------
@functools.cache
@functools.partial(jax.jit, static_argnums=(0, 1))
def _multi_inputs(n=12, d=6):
  k1, k2 = jax.random.split(jax.random.key(7))
  img = contrastive.l2_normalize(jax.random.normal(k1, (n, d)))
  txt = contrastive.l2_normalize(jax.random.normal(k2, (n, d)))
  tokens = jnp.arange(n)[:, None] * jnp.ones((1, 3), jnp.int32)
  tokens = tokens.at[1].set(tokens[0]).at[5].set(tokens[4]).at[6].set(tokens[4])  # duplicates
  txt = txt.at[1].set(txt[0]).at[5].set(txt[4]).at[6].set(txt[4])   # identical captions embed alike
  return img, txt, tokens


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_multi_positive_is_the_plain_loss_without_duplicates(name):
  img, txt, _ = _multi_inputs()
  eye = jnp.eye(img.shape[0], dtype=bool)
  if name == "clip":
    multi = lambda i, t, s: contrastive.clip_loss_multi_positive(i, t, s, eye)
    plain, scalars = contrastive.clip_loss, (jnp.float32(2.0),)
  else:
    multi = lambda i, t, s, b: contrastive.siglip_loss_multi_positive(i, t, s, b, eye)
    plain, scalars = contrastive.siglip_loss, (jnp.float32(1.5), jnp.float32(-3.0))
  args = (img, txt) + scalars
  chex.assert_trees_all_close(jax.jit(jax.value_and_grad(multi, argnums=(0, 1, 2)))(*args),
                              jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2)))(*args),
                              atol=1e-5)


def test_multi_positive_clip_equals_plain_clip_when_duplicates_embed_alike():
  """Identical captions get identical text embeddings, and then CLIP's multi-positive targets
  change nothing (each duplicate's logit equals the matched one): value and gradients equal the
  plain loss. Control: duplicate tokens whose text embeddings differ give a different loss."""
  img, txt, tokens = _multi_inputs()
  same = jax.jit(contrastive.same_rows)(tokens)
  assert int(same.sum()) == img.shape[0] + 2 + 6
  # The text embeddings as a text tower makes them: a function of the tokens (a lookup table).
  ids = tokens[:, 0]
  table = jnp.zeros((img.shape[0], txt.shape[1])).at[ids].set(txt)
  scale = jnp.float32(2.0)
  multi = lambda i, tab: contrastive.clip_loss_multi_positive(i, tab[ids], scale, same)
  plain = lambda i, tab: contrastive.clip_loss(i, tab[ids], scale)
  chex.assert_trees_all_close(jax.jit(jax.value_and_grad(multi, argnums=(0, 1)))(img, table),
                              jax.jit(jax.value_and_grad(plain, argnums=(0, 1)))(img, table),
                              atol=1e-5)
  different = _embeddings(3, 12, 6)[1]           # control: duplicates that embed differently
  multi_t, plain_t = jax.jit(lambda i, t: (contrastive.clip_loss_multi_positive(i, t, scale, same),
                                          contrastive.clip_loss(i, t, scale)))(img, different)
  assert abs(float(multi_t) - float(plain_t)) > 1e-3


def test_multi_positive_siglip_labels_duplicates_positive():
  """SigLIP scores a duplicate caption as a negative; with ``same_rows`` positives it is a
  positive: images whose captions are identical and embed exactly like them reach a lower loss than
  under the plain loss, whose labels push them apart (the control, same inputs)."""
  img, txt, tokens = _multi_inputs()
  same = jax.jit(contrastive.same_rows)(tokens)
  aligned = txt                                  # every image on its caption, duplicates coincide
  t, b = jnp.float32(2.5), jnp.float32(-5.0)
  multi, plain = map(float, jax.jit(lambda i, x: (
      contrastive.siglip_loss_multi_positive(i, x, t, b, same),
      contrastive.siglip_loss(i, x, t, b)))(aligned, txt))
  extra = 8                                      # the 8 off-diagonal duplicate pairs
  pair = float(jax.nn.softplus(-(jnp.exp(t) + b))), float(jax.nn.softplus(jnp.exp(t) + b))
  np.testing.assert_allclose(plain - multi, extra * (pair[1] - pair[0]) / 12, rtol=1e-5)
  assert plain > multi


# -- multi-positive losses and same_rows against float64 numpy references -------------------------
def _np_multi_clip(img, txt, log_scale, positives):
  """Each direction: cross-entropy whose target is uniform over the row's (column's) positives."""
  logits = math.exp(log_scale) * np.float64(img) @ np.float64(txt).T
  pos = np.float64(positives)
  i2t = -(pos / pos.sum(1, keepdims=True) * _np_log_softmax(logits, axis=1)).sum(1).mean()
  t2i = -(pos / pos.sum(0, keepdims=True) * _np_log_softmax(logits, axis=0)).sum(0).mean()
  return (i2t + t2i) / 2


def _np_multi_siglip(img, txt, t_prime, bias, positives):
  logits = math.exp(t_prime) * np.float64(img) @ np.float64(txt).T + bias
  z = np.where(positives, 1.0, -1.0)
  return np.logaddexp(0.0, -z * logits).sum() / len(img)


def _groups_of_positives(n=10):
  """Captions in groups {0, 1, 2}, {3, 4}, {5}, ... (non-trivial, unequal row sums), embeddings
  unrelated to the groups so that every positive changes the value."""
  tokens = np.array([[1, 2, 3]] * 3 + [[4, 2, 0]] * 2 + [[5 + i, 1, 0] for i in range(n - 5)],
                    np.int32)
  img, txt = _embeddings(11, batch=n, dim=5)
  return img, txt, tokens


def test_multi_positive_losses_match_numpy_with_non_trivial_positives():
  img, txt, tokens = _groups_of_positives()
  positives = np.asarray(jax.jit(contrastive.same_rows)(jnp.asarray(tokens)))
  assert positives.sum() == 9 + 4 + 5                      # groups of 3, 2 and five singletons
  clip_multi = jax.jit(contrastive.clip_loss_multi_positive)   # one program for both positives
  got = clip_multi(img, txt, jnp.float32(2.0), jnp.asarray(positives))
  np.testing.assert_allclose(got, _np_multi_clip(img, txt, 2.0, positives), rtol=1e-5)
  got = jax.jit(contrastive.siglip_loss_multi_positive)(img, txt, jnp.float32(1.5),
                                                        jnp.float32(-3.0), jnp.asarray(positives))
  np.testing.assert_allclose(got, _np_multi_siglip(img, txt, 1.5, -3.0, positives), rtol=1e-5)
  # positives need not be symmetric (image i may match caption j but not j's image i)
  lopsided = np.eye(10, dtype=bool) | (np.random.default_rng(2).random((10, 10)) < 0.2)
  assert (lopsided != lopsided.T).any()
  got = clip_multi(img, txt, jnp.float32(2.0), jnp.asarray(lopsided))
  np.testing.assert_allclose(got, _np_multi_clip(img, txt, 2.0, lopsided), rtol=1e-5)
  # control: the plain losses (identity positives) are other numbers on these inputs
  assert abs(_np_multi_clip(img, txt, 2.0, positives) - clip_np(img, txt, 2.0)) > 1e-2
  assert abs(_np_multi_siglip(img, txt, 1.5, -3.0, positives) - siglip_np(img, txt, 1.5, -3.0)) > 1e-2


def test_same_rows_compares_whole_captions_of_distinct_tokens():
  """Against Python's tuple equality: rows that share tokens in another order, differ in one
  position, or differ only in padding are different captions."""
  tokens = np.array([[3, 7, 9, 0], [3, 7, 9, 0], [9, 7, 3, 0], [3, 7, 8, 0], [3, 7, 9, 9],
                     [3, 7, 0, 0], [9, 7, 3, 0], [1, 2, 3, 4]], np.int32)
  want = np.array([[tuple(a) == tuple(b) for b in tokens] for a in tokens])
  np.testing.assert_array_equal(np.asarray(contrastive.same_rows(jnp.asarray(tokens))), want)
  assert want.sum() == len(tokens) + 4                     # pairs (0, 1) and (2, 6), both ways
