"""Goldens (see tests/golden.py for when updating them is legitimate): the smoke runs' rows of
every study, and one update step of each study's main model, against stored JSON."""
import jax
import numpy as np
import optax
import pytest

from tests import golden


def _key(seed: int):
  return jax.random.key(seed, impl="rbg")       # independent of the default PRNG


def _stats(params) -> dict:
  leaves = jax.tree.leaves(params)
  return {"count": int(sum(np.size(x) for x in leaves)),
          "sum": float(sum(np.sum(np.asarray(x, np.float64)) for x in leaves)),
          "sum_sq": float(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in leaves))}


def _one_step(loss_fn, params, batch, learning_rate: float) -> dict:
  """One Adam step and the loss before and after it, each a compiled program (compiled, the
  numbers move from the op-by-op ones by about 1e-7 relative, far inside the goldens' 1e-4)."""
  opt = optax.adam(learning_rate)

  @jax.jit
  def step(params):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, _key(7))
    updates, _ = opt.update(grads, opt.init(params), params)
    after = optax.apply_updates(params, updates)
    return loss, after, loss_fn(after, batch, _key(7))[0]

  loss, after, loss_after = step(params)
  return {"loss_before": float(loss), "loss_after": float(loss_after),
          "params_before": _stats(params), "params_after": _stats(after)}


def orbit_step() -> dict:
  """orbit_full (the fast translation orbit of an MLP) on smoke-sized digits."""
  from invariance import groups, models
  from invariance.data import sources
  digits = sources.load_classification("digits", seed=0)
  canvas = np.zeros((32, 16, 16, 1), np.float32)
  canvas[:, 4:12, 4:12] = digits.train_images[:32]
  model = models.make("orbit_full", models.ModelSpec(mlp_hidden=(32, 32)),
                      groups.Translations(16, 16))
  params = jax.jit(model.init)(_key(0), canvas[:1])
  return _one_step(model.loss, params, {"images": canvas, "labels": digits.train_labels[:32]},
                   3e-3)


def _scenes_and_captions(n: int = 16):
  from invariance import dashcam
  from invariance.data import captions
  images, attrs = dashcam.make_scenes(0, dashcam.TRAIN, n)
  texts = dashcam.make_captions(attrs, 0, 0.0, dashcam.LIGHT)
  tokenizer = captions.Tokenizer()
  return images, attrs, texts, tokenizer


def dual_encoder_step() -> dict:
  """The caption studies' main model: a CLIP dual encoder (dim 8) on 16 p = 0 scenes."""
  from invariance import dual_encoder as de
  images, _, texts, tokenizer = _scenes_and_captions()
  model = de.DualEncoder(tokenizer.vocab_size, 8, "clip")
  tokens = tokenizer.encode(texts)
  params = jax.jit(model.init)(_key(0), images[:1], tokens[:1])
  return _one_step(de.make_loss_fn(model), params, {"images": images, "tokens": tokens}, 1e-3)


def light_classifier_step() -> dict:
  """The recovery study's fine-tuned model: the image tower plus a light head."""
  from invariance import dashcam
  from invariance import dual_encoder as de
  images, attrs, _, tokenizer = _scenes_and_captions()
  classifier = de.classifier_for(de.DualEncoder(tokenizer.vocab_size, 8, "clip"), 2)
  params = jax.jit(classifier.init)(_key(1), images[:1])
  batch = {"images": images, "labels": np.asarray(attrs[dashcam.LIGHT], np.int32)}
  return _one_step(de.make_classifier_loss_fn(classifier), params, batch, 3e-3)


STEPS = {"orbit_full": orbit_step, "dual_encoder_clip": dual_encoder_step,
         "light_classifier": light_classifier_step}


def all_update_steps() -> dict:
  return {name: fn() for name, fn in STEPS.items()}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_one_update_step_matches_the_golden(name):
  expected = golden.load("update_steps.json")[name]
  assert golden.differences(expected, STEPS[name]()) == []


@pytest.mark.parametrize("study", ["orbit", "contrastive", "recover"])
def test_smoke_rows_match_the_golden(smoke_runs, study):
  rows = golden.rows_of(smoke_runs.workdir(study))
  expected = golden.load(f"{study}_smoke_rows.json")
  assert golden.differences(expected, rows) == []


def test_the_comparison_rejects_a_moved_number():
  """The control: a change the size of one test example out of 64 is caught; summation-order
  noise is not."""
  row = {"acc": 0.5, "loss": 1.25, "n": 3, "model": "mlp", "train_seconds": 1.0}
  assert golden.differences(row, dict(row, loss=1.25 * (1 + 1e-6), train_seconds=9.0)) == []
  assert golden.differences(row, dict(row, acc=0.5 + 1 / 64)) != []
  assert golden.differences(row, dict(row, n=4)) != []
  assert golden.differences(row, {k: v for k, v in row.items() if k != "loss"}) != []


def test_sensitivities_get_the_cross_machine_tolerance_and_nothing_else_does():
  """A sensitivity 4e-4 off (what two CPUs gave for the same commit) passes; 1% off is caught, and
  the same 4e-4 on any other field is caught."""
  row = {"sensitivity": {"embedding": {"light": 0.2}}, "probe": {"embedding": {"light": 0.2}}}
  moved = lambda field, f: {**row, field: {"embedding": {"light": 0.2 * f}}}
  assert golden.differences(row, moved("sensitivity", 1 + 4e-4)) == []
  assert golden.differences(row, moved("sensitivity", 1.01)) != []
  assert golden.differences(row, moved("probe", 1 + 4e-4)) != []
