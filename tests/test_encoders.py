"""Hard invariance of the encoders over every group element, at init and after training steps.

Every claim has a control that the same assertion rejects.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import encoders
from invariance import groups as groups_lib
from invariance.testing import assert_invariant

HW = 10
X = jax.random.normal(jax.random.key(0), (4, HW, HW, 1))
Y = jnp.arange(4) % 3
T = groups_lib.Translations(HW, HW)


# One jitted ``init`` / ``apply`` per model (cached on the module's fields, so equal modules share
# it): calls with other parameters of the same shapes reuse the compiled program.
@functools.lru_cache(maxsize=None)
def _jit_init(model):
  return jax.jit(model.init)


@functools.lru_cache(maxsize=None)
def _jit_apply(model):
  return jax.jit(model.apply)


def _native_twin(model):
  """The two convolution paths create the same parameters (same names, shapes, initializers) and
  compute the same function of them (``test_native_and_im2col_convnets_are_one_function``), so
  parameters are made once, through the native path, for both. A single PatchConv's parameters
  do not depend on its padding or ReLU either, nor a ConvNet's on its subclass (CircularCNN and
  FlatCNN only change defaults)."""
  if isinstance(model, encoders.ConvNet):
    fields = ("channels", "kernel_size", "num_classes", "circular", "global_pool", "downsample",
              "dtype")
    return encoders.ConvNet(**{f: getattr(model, f) for f in fields}, conv_impl="native")
  if isinstance(model, encoders.PatchConv):
    return model.clone(impl="native", circular=True, relu=False)
  return model


def _init(model, x, seed=1):
  """``model.init`` as one compiled program (op-by-op init compiles every primitive)."""
  return _jit_init(_native_twin(model))(jax.random.key(seed), x)


def _trained(model, inputs="X", steps=3):
  """Params after a few Adam steps on random data (invariance must survive training), on the
  module-level batch named ``inputs``; made once per model (and its native twin)."""
  return _trained_once(_native_twin(model), inputs, steps)


@functools.lru_cache(maxsize=None)
def _trained_once(model, inputs, steps):
  x = globals()[inputs]
  params = _init(model, x)
  opt = optax.adam(1e-2)
  state = opt.init(params)
  y = jnp.arange(x.shape[0]) % 3

  @jax.jit
  def step(params, state):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params


# Every ConvNet claim runs on both convolution paths (``encoders.conv_path``): the im2col matmuls
# CPU uses and XLA's convolution GPUs and TPUs use.
CONV_IMPLS = ("im2col", "native")

INVARIANT = [
    *((f"circular_cnn_{impl}", encoders.CircularCNN((6, 6), num_classes=3, conv_impl=impl), T)
      for impl in CONV_IMPLS),
    ("p4", encoders.GroupCNN("rotations", (4, 4), num_classes=3), groups_lib.Rotations()),
    ("p4m_rotations", encoders.GroupCNN("dihedral", (4, 4), num_classes=3), groups_lib.Rotations()),
    ("p4m", encoders.GroupCNN("dihedral", (4, 4), num_classes=3), groups_lib.Dihedral()),
]
CONTROLS = [
    ("mlp", encoders.MLP((16,), num_classes=3), T),
    *((f"flat_cnn_{impl}", encoders.FlatCNN((6, 6), num_classes=3, conv_impl=impl), T)
      for impl in CONV_IMPLS),
    *((f"circular_cnn_{impl}_under_rotation",
       encoders.CircularCNN((6, 6), num_classes=3, conv_impl=impl), groups_lib.Rotations())
      for impl in CONV_IMPLS),
    ("p4_under_flips", encoders.GroupCNN("rotations", (4, 4), num_classes=3), groups_lib.Dihedral()),
]


# (variant, model) -> self.variant(model.apply): one compiled program per model and variant, shared
# by the parameters at init and after training and by the controls that reuse an invariant model.
_APPLY = {}


class InvariantEncodersTest(chex.TestCase):

  def _apply(self, model):
    key = (self.variant.type, model)
    if key not in _APPLY:
      _APPLY[key] = self.variant(model.apply)
    return _APPLY[key]

  @chex.variants(with_jit=True, without_jit=True)
  def test_hard_invariance_at_init_and_after_training(self):
    # Op-by-op (without jit) dispatch is slow: that variant checks the first model only.
    for name, model, group in INVARIANT if self.variant.type == chex.ChexVariantType.WITH_JIT \
        else INVARIANT[:2]:
      apply = self._apply(model)
      for params in (_init(model, X), _trained(model)):
        fn = lambda x, p=params: apply(p, x)
        assert_invariant(fn, group, X, rtol=1e-5)
        if self.variant.type == chex.ChexVariantType.WITH_JIT:   # each example its own element
          assert_invariant(fn, group, X, rtol=1e-5, per_example=True, draws=1)

  @chex.variants(with_jit=True)
  def test_controls_are_rejected_by_the_same_assertion(self):
    for name, model, group in CONTROLS:
      params, apply = _init(model, X), self._apply(model)
      with self.assertRaisesRegex(AssertionError, "not invariant"):
        assert_invariant(lambda x, p=params: apply(p, x), group, X, rtol=1e-5)


def test_fast_first_layer_equals_dense_on_every_shift():
  model = encoders.MLP((8, 5))
  params = _init(model, X, seed=2)

  @jax.jit
  def fast_and_naive(params, x):
    fast = model.apply(params, x, method=model.embed_translation_orbit)    # N, |G|, F
    orbit = T.orbit(x)                                                     # |G|, N, H, W, C
    naive = jax.vmap(lambda x: model.apply(params, x, method=model.embed), out_axes=1)(orbit)
    return fast, naive
  fast, naive = fast_and_naive(params, X)
  chex.assert_trees_all_close(fast, naive, atol=1e-5, rtol=1e-5)


def test_parameter_counts_are_pinned():
  # Changing an architecture changes these on purpose; update them with the architecture.
  count = lambda m, x: sum(v.size for v in jax.tree.leaves(
      jax.eval_shape(m.init, jax.random.key(0), x)))
  x24 = jnp.zeros((1, 24, 24, 1))
  assert count(encoders.MLP((256, 256)), x24) == 576 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
  assert count(encoders.CircularCNN((32, 32, 32)), x24) == (9 * 32 + 32) + 2 * (9 * 32 * 32 + 32) + 330
  assert count(encoders.GroupCNN("rotations", (8, 8)), jnp.zeros((1, 8, 8, 1))) == \
      (9 * 8 + 8) + (9 * 4 * 8 * 8 + 8) + (8 * 10 + 10)


def test_group_cnn_rejects_bad_config():
  with pytest.raises(ValueError, match="group_name='translations'"):
    encoders.GroupCNN("translations").init(jax.random.key(0), X)
  with pytest.raises(ValueError, match="square"):
    encoders.GroupCNN("rotations", (4,)).init(jax.random.key(0), jnp.zeros((1, 8, 6, 1)))
  with pytest.raises(ValueError, match="channels=()"):
    encoders.GroupCNN("rotations").init(jax.random.key(0), X)
  with pytest.raises(ValueError, match="channels=()"):
    encoders.ConvNet().init(jax.random.key(0), X)


@pytest.mark.parametrize("circular,shape,relu", [(True, (6, 7, 7, 3), False),
                                                (False, (6, 7, 7, 3), False),
                                                (True, (24, 6, 4, 2), True),
                                                (False, (6, 7, 7, 3), True)])
def test_patch_conv_equals_xla_conv_values_and_gradients(circular, shape, relu):
  """Both paths against lax.conv on explicitly padded input: the hand-written im2col conv (and
  its custom backward, with the bias and the ReLU inside; the (24, ...) shape runs over 3 chunks
  of images), and the native path (wrap, then a VALID conv; or "SAME"). Gradients w.r.t. all
  inputs, and w.r.t. the kernel alone and the input alone (the backward skips what no gradient
  flows into). One compiled program: the reference and both paths."""
  x = jax.random.normal(jax.random.key(3), shape)
  convs = {impl: encoders.PatchConv(5, 3, circular=circular, relu=relu, impl=impl)
           for impl in CONV_IMPLS}
  params = _init(convs["im2col"], x, seed=4)
  k = params["params"]["kernel"]
  b = jax.random.normal(jax.random.key(5), (5,)) * 0.3      # a bias that moves the ReLU's mask
  act = jax.nn.relu if relu else (lambda y: y)

  def reference(k, b, x):
    xp = encoders.circular_pad(x, 1) if circular else jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = jax.lax.conv_general_dilated(xp, k, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return act(y + b)

  path = lambda impl: lambda k, b, x: convs[impl].apply({"params": {"kernel": k, "bias": b}}, x)
  fns = {"reference": reference, **{impl: path(impl) for impl in CONV_IMPLS}}
  loss = lambda f: lambda k, b, x: jnp.sum(jnp.sin(f(k, b, x)))
  every_argnums = ((0, 1, 2), (0,), (1,), (2,))

  @jax.jit      # values and every gradient of every function
  def values_and_grads(k, b, x):
    return {name: (f(k, b, x), [jax.grad(loss(f), argnums=a)(k, b, x) for a in every_argnums])
            for name, f in fns.items()}
  out = values_and_grads(k, b, x)
  y_ref, g_ref = out["reference"]
  for impl in CONV_IMPLS:
    y_mine, g_mine = out[impl]
    try:
      chex.assert_trees_all_close(y_mine, y_ref, atol=1e-5, rtol=1e-5)
      for gm, gr in zip(g_mine, g_ref):
        chex.assert_trees_all_close(gm, gr, atol=1e-4, rtol=1e-4)
    except AssertionError as e:
      raise AssertionError(f"conv path {impl}: {e}") from e


X8 = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))


@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_adaptive_polyphase_net_is_invariant_to_every_shift_and_plain_strides_are_not(impl):
  """APS (two layers, the first followed by stride 2, on 8x8, circular padding, global pool) over
  all 64 shifts at init
  and after a few steps; the same net with plain strides is rejected by the same assertion."""
  T8 = groups_lib.Translations(8, 8)
  aps = encoders.ConvNet((4, 4), num_classes=3, downsample="aps", conv_impl=impl)
  strided = encoders.ConvNet((4, 4), num_classes=3, downsample="stride", conv_impl=impl)
  for params in (_init(aps, X8), _trained(aps, "X8", steps=2)):
    assert_invariant(lambda x, p=params: _jit_apply(aps)(p, x), T8, X8, rtol=1e-5)
  params = _init(aps, X8)                   # the same parameters, plain strides
  with pytest.raises(AssertionError):
    assert_invariant(lambda x: _jit_apply(strided)(params, x), T8, X8, rtol=1e-5)


def test_polyphase_choice_follows_a_shift_and_odd_sides_are_refused():
  x = np.asarray(jax.random.normal(jax.random.key(4), (2, 8, 8, 3)))
  shifted = np.roll(x, (1, 3), axis=(1, 2))
  a, b = (np.asarray(jax.jit(encoders.aps_downsample)(v)) for v in (x, shifted))
  # per example, the kept sub-grid of the shifted input is a cyclic shift of the original's
  follows = lambda a, b, i: any(np.allclose(np.roll(a[i], (dy, dx), axis=(0, 1)), b[i])
                                for dy in range(4) for dx in range(4))
  assert all(follows(a, b, i) for i in range(2))
  s_a, s_b = (np.asarray(encoders.stride_downsample(v)) for v in (x, shifted))
  assert not any(follows(s_a, s_b, i) for i in range(2))
  with pytest.raises(ValueError, match="even map sides"):     # raised while tracing
    jax.eval_shape(encoders.ConvNet((4, 4), downsample="aps").init, jax.random.key(0),
                   jnp.zeros((1, 7, 7, 1)))


@pytest.mark.parametrize("circular,global_pool", [(True, True), (False, False)])
def test_native_and_im2col_convnets_are_one_function(circular, global_pool):
  """The two convolution paths of a whole ConvNet (same parameters): equal outputs and equal
  gradients w.r.t. every parameter and the input; a different kernel is the control the same
  comparison rejects."""
  nets = {impl: encoders.ConvNet((6, 6), num_classes=3, circular=circular,
                                 global_pool=global_pool, conv_impl=impl) for impl in CONV_IMPLS}
  params = _init(nets["im2col"], X)
  loss = lambda impl: lambda p, x: optax.softmax_cross_entropy_with_integer_labels(
      nets[impl].apply(p, x), Y).mean()
  # one program per path: its output and its gradients w.r.t. the parameters and the input
  out_and_grads = {impl: jax.jit(lambda p, x, impl=impl: (
      nets[impl].apply(p, x), jax.grad(loss(impl), argnums=(0, 1))(p, x))) for impl in CONV_IMPLS}
  outs, grads = ({impl: out_and_grads[impl](params, X)[i] for impl in CONV_IMPLS} for i in (0, 1))
  chex.assert_trees_all_close(outs["native"], outs["im2col"], atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(grads["native"], grads["im2col"], atol=1e-5, rtol=1e-5)
  other = jax.tree.map(lambda a: a, params)
  other["params"]["convs_0"]["kernel"] = other["params"]["convs_0"]["kernel"].at[0, 0].add(0.1)
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(out_and_grads["native"](other, X)[0], outs["im2col"], atol=1e-5,
                                rtol=1e-5)


def test_the_convolution_path_follows_the_backend_and_can_be_overridden():
  assert encoders.conv_path(backend="cpu") == "im2col"
  assert encoders.conv_path(backend="gpu") == encoders.conv_path(backend="tpu") == "native"
  assert encoders.conv_path() == "im2col"                  # this suite runs on CPU
  assert encoders.conv_path("native", backend="cpu") == "native"
  assert encoders.conv_path("im2col", backend="tpu") == "im2col"
  with pytest.raises(ValueError, match="conv_impl='fft'; allowed: auto, native, im2col"):
    encoders.conv_path("fft")
