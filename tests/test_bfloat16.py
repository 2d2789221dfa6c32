"""bfloat16 computation (``dtype=jnp.bfloat16``; parameters and optimizer state float32): the
towers keep their hard invariance and the CLIP / SigLIP losses stay close to float32, at stated
tolerances, each with a control that the same assertion rejects.

Tolerances: bfloat16 keeps 8 significant bits (relative spacing 2**-8 = 0.0039). A hard-invariant
net computes the same products for a transformed input, only pooled in another order, so its
bfloat16 invariance error stays near float32 rounding (measured: 0 for the circular nets, 1e-7
for p4m); we allow BF16_INVARIANCE = 1e-2, below every control (measured: 0.021 for p4 under
flips, the closest, and > 1 for the flat CNNs and the MLP). Against float32, logits and losses may move
by a few bfloat16 steps: BF16_VS_F32 = 5e-2, and a 10% change of the parameters is the control.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariance import contrastive
from invariance import encoders
from invariance import groups as groups_lib
from invariance.testing import assert_invariant

BF16_INVARIANCE = 1e-2
BF16_VS_F32 = 5e-2
HW = 8
X = jax.random.normal(jax.random.key(0), (4, HW, HW, 1))
T = groups_lib.Translations(HW, HW)
BF16 = jnp.bfloat16


def _init(model, *args, seed=1):
  """``model.init`` as one compiled program (op-by-op init compiles every primitive). The two
  convolution paths of a ConvNet create the same parameters (same names, shapes, initializers):
  it is initialised through its native-path twin, one program (cached) for both paths."""
  if isinstance(model, encoders.ConvNet):
    return _jit_init(model.clone(conv_impl="native"))(jax.random.key(seed), *args)
  return jax.jit(model.init)(jax.random.key(seed), *args)


@functools.lru_cache(maxsize=None)
def _jit_init(model):
  return jax.jit(model.init)

INVARIANT = [(f"circular_cnn_{impl}", encoders.CircularCNN((6, 6), num_classes=3, conv_impl=impl,
                                                          dtype=BF16), T)
             for impl in ("im2col", "native")] + [
    ("p4m", encoders.GroupCNN("dihedral", (4, 4), num_classes=3, dtype=BF16),
     groups_lib.Dihedral())]
CONTROLS = [(f"flat_cnn_{impl}", encoders.FlatCNN((6, 6), num_classes=3, conv_impl=impl,
                                                  dtype=BF16), T)
            for impl in ("im2col", "native")] + [
    ("mlp", encoders.MLP((16,), num_classes=3, dtype=BF16), T),
    ("p4_under_flips", encoders.GroupCNN("rotations", (4, 4), num_classes=3, dtype=BF16),
     groups_lib.Dihedral())]


@pytest.mark.parametrize("name,model,group", INVARIANT, ids=[n for n, _, _ in INVARIANT])
def test_bfloat16_towers_stay_invariant_at_the_stated_tolerance(name, model, group):
  params = _init(model, X)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))    # params stay float32
  assert_invariant(jax.jit(lambda x: model.apply(params, x)), group, X, rtol=BF16_INVARIANCE)


@pytest.mark.parametrize("name,model,group", CONTROLS, ids=[n for n, _, _ in CONTROLS])
def test_bfloat16_controls_are_rejected_by_the_same_assertion(name, model, group):
  params = _init(model, X)
  with pytest.raises(AssertionError, match="not invariant"):
    assert_invariant(jax.jit(lambda x: model.apply(params, x)), group, X, rtol=BF16_INVARIANCE)


def _relative(a, b) -> float:
  a, b = np.asarray(a), np.asarray(b)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_bfloat16_computation_is_close_to_float32_and_a_changed_model_is_not():
  f32 = encoders.CircularCNN((6, 6), num_classes=3)
  bf16 = encoders.CircularCNN((6, 6), num_classes=3, dtype=BF16)
  params = _init(f32, X)
  apply_f32 = jax.jit(f32.apply)
  reference = apply_f32(params, X)
  low = jax.jit(bf16.apply)(params, X)
  assert low.dtype == jnp.float32                             # the head is float32
  assert _relative(low, reference) <= BF16_VS_F32
  changed = jax.tree.map(lambda p: p * np.float32(1.1), jax.device_get(params))
  assert _relative(apply_f32(changed, X), reference) > BF16_VS_F32          # the control


def _max_relative_leaf_error(a, b) -> float:
  return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
             for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


@pytest.mark.parametrize("impl", ["im2col", "native"])
def test_bfloat16_gradients_are_float32_and_close_to_float32_ones(impl):
  """Every parameter's gradient (the biases' too: sums over every position, which must not be
  accumulated in bfloat16) within BF16_VS_F32 of the float32 gradient, per leaf relative to its
  largest entry; the float32 gradient at 10% larger parameters is the control."""
  x = jax.random.normal(jax.random.key(4), (32, 24, 24, 1))
  f32, bf16 = (encoders.CircularCNN((8, 8), num_classes=3, conv_impl=impl, dtype=d)
               for d in (None, BF16))
  params = _init(f32, x)
  grad = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x)))))
  grad_f32 = grad(f32)
  reference = grad_f32(params)
  grads = grad(bf16)(params)
  chex.assert_trees_all_equal_dtypes(grads, params)
  assert _max_relative_leaf_error(grads, reference) <= BF16_VS_F32
  changed = grad_f32(jax.tree.map(lambda p: p * np.float32(1.1), jax.device_get(params)))
  assert _max_relative_leaf_error(changed, reference) > BF16_VS_F32


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_contrastive_losses_on_bfloat16_embeddings_match_float32(loss):
  """The losses given bfloat16 embeddings (what bfloat16 towers emit) against the float32 loss of
  the same embeddings rounded to bfloat16, and of the unrounded ones; a control: embeddings
  paired with the wrong captions."""
  img = jax.random.normal(jax.random.key(2), (32, 16))
  txt = img + 0.5 * jax.random.normal(jax.random.key(3), (32, 16))
  fn = {"clip": lambda a, b: contrastive.clip_loss(a, b, jnp.log(10.0)),
        "siglip": lambda a, b: contrastive.siglip_loss(a, b, jnp.log(10.0), jnp.float32(-10.0))}[
      loss]
  exact = float(fn(img, txt))
  low = fn(img.astype(BF16), txt.astype(BF16))
  assert abs(float(low) - exact) <= BF16_VS_F32 * abs(exact)
  rounded = float(fn(img.astype(BF16).astype(jnp.float32), txt.astype(BF16).astype(jnp.float32)))
  assert abs(float(low) - rounded) <= BF16_VS_F32 * abs(rounded)
  shuffled = float(fn(img, jnp.roll(txt, 1, axis=0)))
  assert abs(shuffled - exact) > BF16_VS_F32 * abs(exact)                    # the control


@pytest.mark.parametrize("name", ["mlp", "cnn_gap", "p4"])
def test_study_models_train_in_bfloat16_with_float32_state(name):
  """``--dtype=bfloat16`` of the orbit study (``ModelSpec.dtype``): float32 parameters (each
  model's own init, by shape and dtype) and gradients, a finite loss within BF16_VS_F32 of the
  float32 model's at the same parameters."""
  from invariance import models
  spec = models.ModelSpec(mlp_hidden=(16,), cnn_channels=(4,), canvas=HW, num_classes=3)
  batch = {"images": X, "labels": jnp.arange(4) % 3, "elements": jnp.zeros(4, jnp.int32)}
  by_dtype = {dtype: models.make(name, models.ModelSpec(**{**spec.__dict__, "dtype": dtype}), T)
              for dtype in ("float32", "bfloat16")}
  params = _init(by_dtype["float32"], X[:1])        # the values; both models get the same ones
  loss = {}
  for dtype, model in by_dtype.items():
    own = jax.eval_shape(model.init, jax.random.key(1), X[:1])     # this model's init, abstractly
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(own))
    chex.assert_trees_all_equal_shapes_and_dtypes(own, params)
    (loss[dtype], _), grads = jax.jit(jax.value_and_grad(
        lambda p, m=model: m.loss(p, batch, jax.random.key(2)), has_aux=True))(params)
    chex.assert_trees_all_equal_dtypes(grads, params)
  assert abs(float(loss["bfloat16"]) - float(loss["float32"])) <= BF16_VS_F32 * float(
      loss["float32"])


def test_dual_encoder_in_bfloat16_embeds_close_to_float32_with_float32_params():
  from invariance import dual_encoder as de
  f32, bf16 = de.DualEncoder(vocab_size=20), de.DualEncoder(vocab_size=20, dtype=BF16)
  images = jax.random.uniform(jax.random.key(2), (4, 32, 32, 3))
  tokens = jax.random.randint(jax.random.key(3), (4, 6), 0, 20)
  params = _init(f32, images, tokens, seed=4)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  apply_f32 = jax.jit(f32.apply)
  ref_img, ref_txt, _ = apply_f32(params, images, tokens)
  img, txt, scalars = jax.jit(bf16.apply)(params, images, tokens)
  assert img.dtype == txt.dtype == scalars[0].dtype == jnp.float32    # the loss sees float32
  assert max(_relative(img, ref_img), _relative(txt, ref_txt)) <= BF16_VS_F32
  # the control: 10% noise on every parameter (a plain rescaling would cancel in the normalised,
  # positively homogeneous embedding)
  rng = np.random.default_rng(5)
  changed = jax.tree.map(lambda p: p + 0.1 * np.std(p) * rng.normal(size=p.shape).astype(np.float32),
                         jax.device_get(params))
  assert _relative(apply_f32(changed, images, tokens)[0], ref_img) > BF16_VS_F32
