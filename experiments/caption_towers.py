"""Measuring a caption study's tower on scenes without red cars: the suppression and losses studies.

* ``TowerConfig``: the fields both studies share (tower size, batch, scene counts), each declared
  once, with the sizes refused before any work if they cannot be held in memory.
* ``Data``: one seed's scenes, counterfactual pairs and captions, red cars dropped everywhere, so
  the car colours (black, blue, white) and the lamp colours (red, green) share no word and no pixel
  colour (``captions.disjoint_car_colors``).
* ``measure``: every layer's ridge probe per attribute and the counterfactual sensitivity saved as
  its numerator (mean distance to the one-attribute flip) and denominator (to an unrelated scene);
  optionally the embedding's cross-validated MLP probe (``invariance.mlp_probe``).
* ``zero_shot``: prompt accuracy for the car colour and, where its words occurred in the tower's
  training captions, the light (else ``None``: not testable).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from experiments import cli
from experiments import config
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import evaluate
from invariance import mlp_probe
from invariance import probes
from invariance.data import captions as captions_lib
from invariance.data import scenes
from invariance.data import sources

LAYERS = ("block1_grid", "block1_pool", "block2_grid", "block2_pool", "block3_grid", "block3_pool",
          "penultimate", "embedding")
KEEP_CARS = captions_lib.disjoint_car_colors()        # black, blue, white: no red car anywhere
SCENE_BYTES = 4 * dashcam.IMAGE_SIZE ** 2 * 3         # one scene held in memory, float32 RGB
DRAWN = 1.45            # raw scenes drawn per kept scene (about a quarter have a red car)
DRAWN_PAIRS = 2.3       # raw pairs drawn per kept pair (neither side may have a red car)


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """The tower and the scene counts of a caption study (mix into its ``StudyConfig``)."""

  embed_dim: int = config.param(8, "Embedding dimension.", low=1)
  batch_size: int = config.param(128, "Batch size.", low=2)
  num_train: int = config.param(20000, "Training scenes (red cars excluded).", low=2)
  num_probe: int = config.param(1000, "Scenes in each probe split.", low=8)
  num_pairs: int = config.param(500, "Counterfactual pairs per attribute.", low=2)

  def check_towers(self) -> None:
    """Refuse what cannot run, before any work: a batch larger than the data, and scene counts or
    an embedding whose estimated memory exceeds this machine's (one line naming the flag)."""
    if self.batch_size > self.num_train:
      config.fail("batch_size", self.batch_size, f"allowed: <= --num_train={self.num_train}")
    pairs = 2 * DRAWN_PAIRS * len(dashcam.ATTRIBUTES)
    for flag, count, drawn in (("num_train", self.num_train, DRAWN),
                               ("num_probe", self.num_probe, 2 * DRAWN),
                               ("num_pairs", self.num_pairs, pairs)):
      # Exact integers (a flag may have 30 digits), clipped where a float would overflow.
      cli.check_memory(flag, count, float(min(SCENE_BYTES * drawn * count, 10**300)))
    cli.check_memory("embed_dim", self.embed_dim, de.training_bytes(
        captions_lib.Tokenizer().vocab_size, self.embed_dim, self.batch_size))


def _kept(attrs: dict, n: int, flag: str, *more: dict) -> np.ndarray:
  ok = np.isin(attrs["car_color"], KEEP_CARS)
  for other in more:
    ok &= np.isin(other["car_color"], KEEP_CARS)
  index = np.flatnonzero(ok)[:n]
  if len(index) < n:
    raise ValueError(f"--{flag}={n}: only {len(index)} scenes without a red car were drawn")
  return index


class Data:
  """One seed's scenes with lamps of ``lamp_size``, red cars dropped (streams of
  ``invariance.dashcam``; enough raw scenes are drawn that ``n`` remain)."""

  def __init__(self, seed: int, data_dir, lamp_size: int):
    self.seed, self.data_dir, self.lamp_size = seed, data_dir, lamp_size
    self._cache: dict = {}

  def scenes(self, stream: int, n: int, flag: str = "num_probe"):
    if (stream, n) not in self._cache:
      images, attrs = dashcam.make_scenes(self.seed, stream, int(n * DRAWN) + 64, self.data_dir,
                                          self.lamp_size)
      i = _kept(attrs, n, flag)
      self._cache[(stream, n)] = images[i], {k: v[i] for k, v in attrs.items()}
    return self._cache[(stream, n)]

  def pairs(self, n: int) -> dict:
    if ("pairs", n) not in self._cache:
      out = {}
      for i, attr in enumerate(dashcam.ATTRIBUTES):
        a, b, attrs_a, attrs_b = sources.load_scene_pairs(
            int(n * DRAWN_PAIRS) + 64, attr, (self.seed, dashcam.PAIRS, i),
            size=dashcam.IMAGE_SIZE, data_dir=self.data_dir, lamp_size=self.lamp_size)
        j = _kept(attrs_a, n, "num_pairs", attrs_b)
        out[attr] = (a[j], b[j])
      self._cache[("pairs", n)] = out
    return self._cache[("pairs", n)]

  def captions(self, n: int, p: float) -> list[str]:
    return dashcam.make_captions(self.scenes(dashcam.TRAIN, n, "num_train")[1], self.seed, p,
                                 dashcam.LIGHT)


def pair_distances(feats_a: dict, feats_b: dict) -> dict:
  """``{layer: (paired, unrelated)}``: mean distance between the features of each counterfactual
  pair, and between a scene and the next pair's partner (an unrelated scene); their ratio is the
  sensitivity (``evaluate.pair_sensitivity``)."""
  out = {}
  for layer, f_a in feats_a.items():
    f_a = np.asarray(f_a, np.float64).reshape(len(f_a), -1)
    f_b = np.asarray(feats_b[layer], np.float64).reshape(len(f_a), -1)
    out[layer] = (float(np.linalg.norm(f_a - f_b, axis=1).mean()),
                  float(np.linalg.norm(f_a - np.roll(f_b, 1, axis=0), axis=1).mean()))
  return out


def measure(model: de.Jitted, params, data: Data, num_probe: int, num_pairs: int,
            mlp: bool) -> dict:
  """Every layer's ridge probes and sensitivity (numerator, denominator, ratio) per attribute; with
  ``mlp``, the embedding's MLP probes too."""
  keep = lambda x: {k: v for k, v in model.image_features(params, x).items() if k in LAYERS}
  (x_tr, a_tr), (x_te, a_te) = (data.scenes(k, num_probe)
                                for k in (dashcam.PROBE_TRAIN, dashcam.PROBE_TEST))
  f_tr, f_te = (evaluate.batched_apply(keep, x, dashcam.EVAL_BATCH) for x in (x_tr, x_te))
  out = {"probe": {}, "sens_num": {}, "sens_den": {}, "sensitivity": {}}
  for layer in LAYERS:
    got = probes.ridge_probes(f_tr[layer], a_tr, f_te[layer], a_te)
    out["probe"][layer] = {a: acc for a, (acc, _) in got.items()}
  for attr, (a, b) in data.pairs(num_pairs).items():
    dist = pair_distances(*(evaluate.batched_apply(keep, x, dashcam.EVAL_BATCH) for x in (a, b)))
    for layer, (num, den) in dist.items():
      out["sens_num"].setdefault(layer, {})[attr] = num
      out["sens_den"].setdefault(layer, {})[attr] = den
      out["sensitivity"].setdefault(layer, {})[attr] = num / den if den > 0 else 0.0
  if mlp:
    got = mlp_probe.mlp_probes(f_tr["embedding"], a_tr, f_te["embedding"], a_te, seed=data.seed)
    out["mlp_probe"] = {"embedding": {a: acc for a, (acc, _) in got.items()}}
  return out


def zero_shot(model: de.Jitted, tokenizer, params, data: Data, num_probe: int,
              light_testable: bool) -> dict:
  """Mean accuracy over ``dashcam.ZERO_SHOT``'s prompts: car colour among the kept colours, and
  the light only where its words occurred in the tower's training captions (else None)."""
  images, attrs = data.scenes(dashcam.PROBE_TEST, num_probe)
  emb = evaluate.batched_apply(lambda x: model.embed_image(params, x), images, dashcam.EVAL_BATCH)
  names = {"car_color": [scenes.CAR_COLORS[i] for i in KEEP_CARS],
           dashcam.LIGHT: list(scenes.ATTRIBUTES[dashcam.LIGHT])}
  values = {"car_color": np.array(KEEP_CARS), dashcam.LIGHT: np.arange(2)}
  out = {}
  for attr, templates in dashcam.ZERO_SHOT.items():
    if attr == dashcam.LIGHT and not light_testable:
      out[attr] = None
      continue
    accs = []
    for t in templates:
      text = model.embed_text(params, tokenizer.encode([t.format(value=v) for v in names[attr]]))
      guess = values[attr][np.argmax(emb @ np.asarray(text).T, axis=1)]
      accs.append(float(np.mean(guess == attrs[attr])))
    out[attr] = float(np.mean(accs))
  return out
