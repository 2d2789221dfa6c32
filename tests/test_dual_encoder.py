"""Dual encoder: shapes, unit-norm embeddings, pinned parameter count, padding, and it learns."""
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


def _init(model):
  """Fresh copies (train.fit donates its params) of one init per (loss, dim)."""
  return jax.tree.map(jnp.copy, _cached_init(model.loss, model.embed_dim))


@pytest.mark.parametrize("loss, dim, count", [("clip", 8, 30993), ("siglip", 8, 30994),
                                              ("clip", 64, 45441)])
def test_parameter_count_is_pinned(loss, dim, count):
  # Update the pinned numbers only when the architecture is changed on purpose.
  shapes = jax.eval_shape(de.DualEncoder(VOCAB, dim, loss).init, jax.random.key(0),
                          *de.example_inputs(32, MAX_LEN))
  assert sum(x.size for x in jax.tree.leaves(shapes)) == count


def test_shapes_normalisation_and_loss_scalars():
  model = de.DualEncoder(VOCAB, 8, "siglip")
  params = _init(model)
  images, tokens, _ = _data(16)
  apply = jax.jit(lambda p, x, t: (model.apply(p, x, method="image_features"), model.apply(p, x, t)))
  feats, (img, txt, (t_prime, bias)) = apply(params, images, tokens)
  chex.assert_shape([feats["conv1_grid"], feats["pooled"], feats["penultimate"],
                     feats["embedding"]], [(16, 16 * 16), (16, 32), (16, 128), (16, 8)])
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
