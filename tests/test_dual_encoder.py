"""Dual encoder: shapes, unit-norm embeddings, pinned parameter count (and its formula), padding,
the CLIP scale clamp, the light classifier's pretrained tower, and it learns."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import contrastive
from invariance import dual_encoder as de
from invariance import train
from invariance.data import captions, scenes

TOKENIZER = captions.Tokenizer()
VOCAB, MAX_LEN = TOKENIZER.vocab_size, TOKENIZER.max_len


def _data(n=64, seed=0, policy="full"):
  rng = np.random.default_rng(seed)
  images, attrs, _ = scenes.make_scenes(n, rng)
  return images, TOKENIZER.encode(captions.make_captions(attrs, policy, rng)), attrs


@functools.lru_cache(maxsize=None)
def _cached_init(loss, dim):
  model = de.DualEncoder(VOCAB, dim, loss)
  return jax.jit(model.init)(jax.random.key(0), *de.example_inputs(32, MAX_LEN))


@functools.lru_cache(maxsize=None)
def _training_value_and_grad(loss):
  """Jitted value and gradient of make_loss_fn's loss for one (loss, dim 8) model, batch an
  argument: one program for every test that differentiates the training loss."""
  model = de.DualEncoder(VOCAB, 8, loss)
  return jax.jit(jax.value_and_grad(lambda p, batch: de.make_loss_fn(model)(p, batch, None)[0]))


def _init(model):
  """Fresh copies (train.fit donates its params) of one init per (loss, dim)."""
  return jax.tree.map(jnp.copy, _cached_init(model.loss, model.embed_dim))


@pytest.mark.parametrize("loss, dim, count", [("clip", 8, 32785), ("siglip", 8, 32786),
                                              ("clip", 64, 47233)])
def test_parameter_count_is_pinned(loss, dim, count):
  # Update the pinned numbers only when the architecture is changed on purpose (60-word caption
  # vocabulary since the paraphrases of the second caption study).
  shapes = jax.eval_shape(de.DualEncoder(VOCAB, dim, loss).init, jax.random.key(0),
                          *de.example_inputs(32, MAX_LEN))
  assert sum(x.size for x in jax.tree.leaves(shapes)) == count
  assert de.param_count(VOCAB, dim, loss) == count       # the formula used to refuse huge sizes


def test_param_count_formula_follows_the_architecture_and_sizes_the_memory():
  model = de.DualEncoder(VOCAB, 3, "clip", widths=(4, 6), strides=(1, 2), hidden=5, text_width=7)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *de.example_inputs(32, MAX_LEN))
  count = de.param_count(VOCAB, 3, "clip", widths=(4, 6), hidden=5, text_width=7)
  assert sum(x.size for x in jax.tree.leaves(shapes)) == count
  assert de.param_count(VOCAB, 4, "clip", widths=(4, 6), hidden=5, text_width=7) != count
  # float32 params, gradients and two Adam moments, plus two batches of embeddings.
  assert de.training_bytes(VOCAB, 8, 0) == 16 * de.param_count(VOCAB, 8)
  assert de.training_bytes(VOCAB, 10**30, 128) > 1e30       # exact for sizes that cannot exist


def test_shapes_normalisation_and_loss_scalars():
  model = de.DualEncoder(VOCAB, 8, "siglip")
  params = _init(model)
  images, tokens, _ = _data(16)
  apply = jax.jit(lambda p, x, t: (model.apply(p, x, method="image_features"),
                                   model.apply(p, x, t)))
  feats, (img, txt, (t_prime, bias)) = apply(params, images, tokens)
  chex.assert_shape([feats[k] for k in ("block1_grid", "block1_pool", "block2_grid", "block3_grid",
                                        "block3_pool", "penultimate", "embedding")],
                    [(16, 64 * 16), (16, 16), (16, 64 * 32), (16, 64 * 32), (16, 32), (16, 128),
                     (16, 8)])
  chex.assert_trees_all_close(jnp.linalg.norm(img, axis=-1), jnp.ones(16), atol=1e-5)
  chex.assert_trees_all_close(jnp.linalg.norm(txt, axis=-1), jnp.ones(16), atol=1e-5)
  chex.assert_trees_all_close(img, feats["embedding"])
  chex.assert_trees_all_close((t_prime, bias), contrastive.init_siglip_params())


def test_text_tower_ignores_padding_and_tower_init_ignores_the_loss():
  clip, siglip = de.DualEncoder(VOCAB, 8, "clip"), de.DualEncoder(VOCAB, 8, "siglip")
  p_clip, p_siglip = _init(clip), _init(siglip)
  embed_text = jax.jit(lambda p, t: clip.apply(p, t, method="embed_text"))
  tokens = TOKENIZER.encode(["a red car ahead", "ITAP a white car"], max_len=MAX_LEN)
  longer = np.pad(tokens, ((0, 0), (0, 5)))
  chex.assert_trees_all_close(embed_text(p_clip, tokens), embed_text(p_clip, longer), atol=1e-6)
  # The study's random-init control relies on this: same key -> same towers, whatever the loss.
  strip = lambda p: {k: v for k, v in p["params"].items() if k not in ("log_scale", "t_prime",
                                                                       "bias")}
  chex.assert_trees_all_equal(strip(p_clip), strip(p_siglip))


def test_bad_arguments_raise():
  inputs = de.example_inputs(32, MAX_LEN)
  with pytest.raises(ValueError, match="loss"):
    jax.eval_shape(de.DualEncoder(VOCAB, 8, "triplet").init, jax.random.key(0), *inputs)
  with pytest.raises(ValueError, match="embed_dim"):
    jax.eval_shape(de.DualEncoder(VOCAB, 0, "clip").init, jax.random.key(0), *inputs)


def test_loss_decreases_in_a_few_steps():
  # CLIP only (each loss costs a ~10 s compile); SigLIP training runs in the smoke study test.
  model = de.DualEncoder(VOCAB, 8, "clip")
  images, tokens, _ = _data(64, policy="salient")      # car colour: learnable in a few steps
  batch_at = lambda step: {"images": images, "tokens": tokens}
  one_device = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=jax.devices()[:1])  # compiles faster than 8 virtual devices
  _, history = train.fit(de.make_loss_fn(model), _init(model), batch_at, optax.adam(3e-3),
                         train.TrainConfig(steps=20, log_every=1), jax.random.key(1),
                         mesh=one_device)
  assert np.isfinite(history["loss"]).all()
  assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_the_training_loss_is_the_materialised_loss_of_the_embeddings(loss):
  """make_loss_fn picks its implementation (for CLIP the fused one); its value and gradients
  equal the plain autodiff loss of the model's embeddings."""
  model = de.DualEncoder(VOCAB, 8, loss)
  params = _init(model)
  images, tokens, _ = _data(16)
  batch = {"images": images, "tokens": tokens}
  plain = {"clip": contrastive.clip_loss, "siglip": contrastive.siglip_loss}[loss]

  def reference(p):
    img, txt, scalars = model.apply(p, images, tokens)
    return plain(img, txt, *scalars)

  got = _training_value_and_grad(loss)(params, batch)
  want = jax.jit(jax.value_and_grad(reference))(params)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_clip_scale_is_clamped_on_the_parameter_and_its_gradient_lives_past_it():
  model = de.DualEncoder(VOCAB, 8, "clip")
  assert de.make_project_fn(de.DualEncoder(VOCAB, 8, "siglip")) is None
  project = de.make_project_fn(model)
  params = _init(model)
  for log_scale, expected in ((6.0, np.log(100.0)), (1.0, 1.0)):
    params["params"]["log_scale"] = jnp.asarray(log_scale, jnp.float32)
    projected = project(params)
    np.testing.assert_allclose(projected["params"]["log_scale"], expected, rtol=1e-6)
    chex.assert_trees_all_equal(projected["params"]["image_tower"],
                                params["params"]["image_tower"])
  # Past ln 100 the loss still moves the scale (clamped inside the loss, its gradient was 0 there).
  params["params"]["log_scale"] = jnp.asarray(6.0, jnp.float32)
  images, tokens, _ = _data(16)
  _, grads = _training_value_and_grad("clip")(params, {"images": images, "tokens": tokens})
  assert float(grads["params"]["log_scale"]) != 0.0


def test_light_classifier_takes_the_dual_encoders_tower():
  model = de.DualEncoder(VOCAB, 8, "clip")
  dual = _init(model)
  classifier = de.classifier_for(model, classes=2)
  fresh = jax.jit(classifier.init)(jax.random.key(5), de.example_inputs(32, MAX_LEN)[0])
  tuned = de.with_tower(fresh, dual["params"]["image_tower"])
  images, _, attrs = _data(8)
  loss_fn = de.make_classifier_loss_fn(classifier)

  @jax.jit
  def measure(fresh, tuned, dual):
    pen = lambda p: classifier.apply(p, images)["penultimate"]
    return (pen(fresh), pen(tuned), model.apply(dual, images, method="image_features"),
            loss_fn(tuned, {"images": images, "labels": attrs["light"]}, None))

  from_fresh, from_tuned, feats, (loss, aux) = measure(fresh, tuned, dual)
  chex.assert_trees_all_close(from_tuned, feats["penultimate"], atol=1e-6)
  assert not np.allclose(from_fresh, feats["penultimate"])       # control: its own random tower
  chex.assert_trees_all_equal(tuned["params"]["head"], fresh["params"]["head"])
  assert np.isfinite(loss) and 0.0 <= float(aux["acc"]) <= 1.0
