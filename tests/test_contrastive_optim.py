"""The caption study's optimizer options reach the update: AdamW decay, a frozen temperature."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariance import contrastive_optim
from invariance import dual_encoder as de
from invariance import train
from invariance.data import captions


@pytest.fixture(scope="module")
def params():
  model = de.DualEncoder(captions.Tokenizer().vocab_size, 4)
  return jax.device_get(model.init(jax.random.key(0), *de.example_inputs()))


def _update(opt, params, grads):
  updates, _ = opt.update(grads, opt.init(params), params)
  return updates["params"]


def test_weight_decay_shrinks_weight_matrices_only(params):
  zeros = jax.tree.map(jnp.zeros_like, params)
  up = _update(contrastive_optim.make_optimizer(0.1, weight_decay=0.2), params, zeros)
  kernel = params["params"]["image_proj"]["kernel"]
  np.testing.assert_allclose(up["image_proj"]["kernel"], -0.1 * 0.2 * kernel, rtol=1e-6)
  np.testing.assert_allclose(up["text_tower"]["embed"]["embedding"],
                             -0.02 * params["params"]["text_tower"]["embed"]["embedding"],
                             rtol=1e-6)
  assert float(jnp.abs(up["image_proj"]["bias"]).max()) == 0.0         # biases do not decay
  assert float(up["log_scale"]) == 0.0                                  # nor the temperature
  control = _update(contrastive_optim.make_optimizer(0.1, weight_decay=0.0), params, zeros)
  assert float(jnp.abs(control["image_proj"]["kernel"]).max()) == 0.0   # the control: no decay


def test_zero_decay_is_adam_and_fixed_temperature_freezes_only_it(params):
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  adam = _update(optax.adam(0.1), params, grads)
  plain = _update(contrastive_optim.make_optimizer(0.1), params, grads)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), adam, plain)
  fixed = _update(contrastive_optim.make_optimizer(0.1, fixed_temperature=True), params, grads)
  assert float(fixed["log_scale"]) == 0.0 and float(plain["log_scale"]) != 0.0
  np.testing.assert_array_equal(fixed["image_proj"]["kernel"], plain["image_proj"]["kernel"])
  siglip = {"params": {"t_prime": jnp.float32(2.3), "bias": jnp.float32(-10.0)}}
  mask = contrastive_optim.temperature_mask(siglip)
  assert mask["params"]["t_prime"] and not mask["params"]["bias"]


def test_decay_reaches_train_fit():
  """Through ``train.fit`` (the study passes the optimizer it builds): with a loss that does not
  depend on the weights, only the decay moves them: w_T = w_0 (1 - lr wd)^T."""
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  loss_fn = lambda p, batch, rng: (0.0 * jnp.sum(p["b"]), {})
  cfg = train.TrainConfig(steps=3, name="decay", log_every=3)
  got, _ = train.fit(loss_fn, params, lambda step: {"x": np.zeros((8, 1), np.float32)},
                     contrastive_optim.make_optimizer(0.1, weight_decay=0.5), cfg,
                     jax.random.key(0))
  np.testing.assert_allclose(got["w"], (1 - 0.05) ** 3, rtol=1e-6)
  np.testing.assert_allclose(got["b"], 1.0)


def test_bad_options_are_refused():
  with pytest.raises(ValueError, match="weight_decay"):
    contrastive_optim.make_optimizer(0.1, weight_decay=-0.1)
  with pytest.raises(ValueError, match="fixed_temperature"):
    contrastive_optim.make_optimizer(0.1, fixed_temperature="yes")
