"""invariance.models: every orbit-study model by name builds, trains a step and evaluates."""
import jax
import numpy as np
import pytest

from invariance import groups as groups_lib
from invariance import models

T = groups_lib.Translations(8, 8)
SPEC = models.ModelSpec(mlp_hidden=(16,), cnn_channels=(4,), orbit_samples=2, canvas=8,
                        aug_width_reg=0.05, aug_eval_samples=2)
BATCH = {"images": np.asarray(jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))),
         "labels": np.arange(4), "elements": np.arange(4).astype(np.int32)}


# Every model of models.NAMES is built, trained, evaluated and audited end to end by the orbit
# study's smoke run (tests/test_orbit_study.py), so the unit tests here cover what it does not.


def test_parameter_count_is_pinned():
  """MLP 64-16-10 (the orbit models share it): 64*16+16 + 16*10+10."""
  model = models.make("orbit_full", SPEC, T)
  shapes = jax.eval_shape(model.init, jax.random.key(1), BATCH["images"][:1])   # nothing runs
  assert models.num_params(shapes) == 1210


def test_learned_shift_range_gets_the_width_reward_and_gradients():
  model = models.make("learned_aug", SPEC, T)
  params = jax.jit(model.init)(jax.random.key(1), BATCH["images"][:1])
  width = models.learned_width(model, params)
  expected = 4.0 * float(jax.nn.sigmoid(-2.0))
  assert np.isclose(width["dy"], expected) and np.isclose(width["dx"], expected)
  # without the reward (the control), the penalty's contribution to the gradient vanishes
  no_reward = models.make("learned_aug", models.ModelSpec(**{**SPEC.__dict__, "aug_width_reg": 0.0}),
                          T)
  width_grad = lambda m, p: jax.grad(lambda p: m.loss(p, BATCH, jax.random.key(3))[0])(p)[
      "aug"]["params"]["width_logit"]
  g, g0 = (np.asarray(a) for a in jax.jit(                 # both gradients in one program
      lambda p: (width_grad(model, p), width_grad(no_reward, p)))(params))
  assert np.all(np.isfinite(g)) and np.any(g != 0)
  s = 1 / (1 + np.exp(2.0))                      # sigmoid(-2), the initial width logit
  reward = np.full(2, -0.05 * s * (1 - s))        # d/dw of -0.05 * sum(sigmoid(w)), per axis
  np.testing.assert_allclose(g - g0, reward, rtol=1e-4, atol=1e-7)


def test_unknown_model_is_refused():
  with pytest.raises(ValueError, match="allowed: mlp"):
    models.make("resnet", SPEC, T)


def test_hyperparameters_have_no_library_default():
  """A model whose hyperparameter is left unset is refused (the study config is their one home);
  the same spec with it set builds (the control)."""
  with pytest.raises(ValueError, match="cnn_gap.*needs ModelSpec.cnn_channels"):
    models.make("cnn_gap", models.ModelSpec(mlp_hidden=(16,)), T)
  with pytest.raises(ValueError, match="orbit_sampled.*needs ModelSpec.orbit_samples"):
    models.make("orbit_sampled", models.ModelSpec(mlp_hidden=(16,)), T)
  models.make("cnn_gap", models.ModelSpec(cnn_channels=(4,)), T)
  from experiments.orbit_config import OrbitConfig
  spec = OrbitConfig().model_spec()
  assert (spec.mlp_hidden, spec.cnn_channels) == ((64, 64), (16, 16, 16, 16))
  for name in models.NAMES:
    models.make(name, spec, T)
