"""Per-layer features of a pretrained tower and the prompt-ensemble zero-shot (hand-worked cases)."""
import json

import jax
import numpy as np
import pytest

from invariance.pretrained import checkpoint, config as config_lib, features, prompts, towers

FX = "tests/fixtures/pretrained/"


def test_patch_index():
  np.testing.assert_array_equal(features.patch_index([[0.0, 0.0], [0.99, 0.5], [0.3, 0.9]], 4),
                                [0, 14, 7])


def test_layer_features_equal_the_towers_own_outputs():
  cfg = config_lib.from_dict(json.load(open(FX + "clip_gelu_config.json")))
  _, params = checkpoint.load(FX + "clip_gelu.safetensors", cfg)
  model = towers.TwoTower(cfg)
  x = np.random.default_rng(0).normal(size=(5, 32, 32, 3)).astype(np.float32)
  centres = np.array([[0.1, 0.1], [0.9, 0.9], [0.5, 0.3], [0.3, 0.6], [0.0, 0.99]], np.float32)
  got = features.layer_features(model, params, x, centres, batch=2)     # batches of 2, padded
  assert list(got) == features.layer_names(cfg, boxes=True)
  ref = jax.jit(lambda x: model.apply({"params": params}, x, True, method=model.encode_image))(x)
  grid = np.asarray(ref["blocks"]["patch_grid"])                       # (L, N, 4, 4, W)
  rc = np.floor(centres * 4).astype(int)
  for i in range(cfg.vision.layers):
    np.testing.assert_allclose(got[f"block{i}_cls"], ref["blocks"]["class_token"][i], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[f"block{i}_mean"], ref["blocks"]["patch_mean"][i], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[f"block{i}_box"], grid[i, np.arange(5), rc[:, 0], rc[:, 1]],
                               rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["embedding"], ref["embedding"], rtol=1e-5, atol=1e-5)
  assert "block0_box" not in features.layer_features(model, params, x[:2])


def _unit(*rows):
  return prompts.normalise(np.array(rows, np.float64))


def test_zero_shot_uses_the_ensemble_of_templates():
  emb = np.stack([_unit([1, 0.2], [1, -0.2]), _unit([0, 1], [0.1, 1])])   # (K=2, T=2, E=2)
  ens = prompts.ensemble(emb)
  np.testing.assert_allclose(ens[0], [1, 0], atol=1e-12)
  images = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 1.2]])
  assert prompts.zero_shot_accuracy(images, emb, [0, 1, 1]) == 1.0
  assert prompts.zero_shot_accuracy(images, emb, [1, 0, 0]) == 0.0


def test_prompt_separation_hand_worked():
  apart = np.stack([_unit([1, 0], [1, 0.1]), _unit([0, 1], [0.1, 1])])
  sep = prompts.prompt_separation(apart)
  assert sep["leave_one_template_out"] == 1.0 and abs(sep["mean_cosine_between_classes"]) < 0.11
  same = np.stack([_unit([1, 0], [0, 1]), _unit([1, 0.01], [0.01, 1])])  # classes indistinct
  sep = prompts.prompt_separation(same)
  assert sep["mean_cosine_between_classes"] > 0.99 and sep["leave_one_template_out"] <= 0.5


def test_prompts_fill_templates_class_major():
  assert prompts.prompts(["red", "green"], ["a {} light", "{}!"]) == [
      "a red light", "red!", "a green light", "green!"]
  with pytest.raises(ValueError, match="exactly one"):
    prompts.prompts(["red"], ["no slot"])


def test_prompt_embeddings_shape_and_norm():
  encode = lambda ids: np.asarray(ids, np.float64)[:, :3] + 1.0  # noqa: E731
  tokenize = lambda texts: np.array([[len(t), 1, 2] for t in texts])  # noqa: E731
  emb = prompts.prompt_embeddings(encode, tokenize, ["a", "bb"], ["{}", "x{}"])
  assert emb.shape == (2, 2, 3)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0)
