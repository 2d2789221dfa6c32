"""The pretrained study's rows: data and towers loaded once, one method per kind of row (a
(tower, view)'s label curves and zero-shot, raw pixels, the invariance audit, the placement map).
``experiments.pretrained`` lists the runs; ``pretrained_report`` turns the rows into results."""
from __future__ import annotations

import functools
import time

import jax
import numpy as np

from experiments import config
from experiments.pretrained_config import Checkpoint, PretrainedConfig
from experiments.pretrained_data import Labelled, load
from invariance import audit
from invariance import probes
from invariance.data import crops
from invariance.pretrained import checkpoint as checkpoint_lib
from invariance.pretrained import features as features_lib
from invariance.pretrained import prompts
from invariance.pretrained import tokenizer as tokenizer_lib
from invariance.pretrained import towers

PIXELS = "pixels"
PIXEL_SIDE = 32


class Study:
  """Loads data and towers once; computes the rows ``main`` asks for."""

  def __init__(self, cfg: PretrainedConfig):
    self.cfg = cfg
    self.data: Labelled = load(cfg)
    self.towers = {c.name: c for c in cfg.towers}
    self.train_pre: dict = {}      # (tower, view) -> the training images' pre-projection features

  @functools.lru_cache(maxsize=2)
  def params(self, name: str):
    ckpt: Checkpoint = self.towers[name]
    model = towers.TwoTower(ckpt.tower, dtype=None if self.cfg.dtype == "float32" else self.cfg.dtype)
    if ckpt.path is None:
      v, t = ckpt.tower.vision, ckpt.tower.text
      params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, v.image_size, v.image_size, 3)),
                                   np.zeros((1, t.context_length), np.int32))["params"]
    else:
      params = checkpoint_lib.load(ckpt.path, ckpt.tower)[1]
    return model, params

  def tokenizer(self, tower):
    """The tower's tokenizer (None: zero-shot is skipped, and the rows say so). One
    ``--tokenizer`` serves a run: measure CLIP and SigLIP checkpoints in separate runs."""
    path = self.cfg.tokenizer
    if tower.family == "siglip":
      if not path:
        return None
      if not path.endswith(".model"):
        config.fail("tokenizer", path, "allowed for SigLIP towers: a SentencePiece .model file "
                    "(run CLIP and SigLIP checkpoints separately)")
      tok = tokenizer_lib.SiglipTokenizer(path, tower.text.context_length)
      vocab = tok.sp.get_piece_size()
    else:
      path = path or tokenizer_lib.installed_openclip_vocab()
      if path is None:
        return None
      if not path.endswith(".gz"):
        config.fail("tokenizer", path, "allowed for CLIP towers: the BPE merges file "
                    "bpe_simple_vocab_16e6.txt.gz (run CLIP and SigLIP checkpoints separately)")
      tok = tokenizer_lib.ClipTokenizer(path, tower.text.context_length)
      vocab = tok.vocab_size
    if vocab > tower.text.vocab_size:
      config.fail("tokenizer", self.cfg.tokenizer, f"has {vocab} tokens, more than the text "
                  f"tower's {tower.text.vocab_size}; allowed: the tokenizer of this architecture")
    return tok

  @functools.lru_cache(maxsize=1)
  def view(self, name: str):
    """``{split: (images, centres)}`` of one view, images in [0, 1] at the data's frame size."""
    _, context, grey = next(v for v in self.cfg.views if v[0] == name)
    d = self.data
    return {split: crops.view(images, boxes, context, d.frame_size, grey)
            for split, images, boxes in (("train", d.train_images, d.train_boxes),
                                         ("test", d.test_images, d.test_boxes))}

  def features(self, name: str, images, centres):
    model, params = self.params(name)
    x = towers.prepare_images(images, model.config)
    return features_lib.layer_features(model, params, np.asarray(x),
                                       centres if self.cfg.has_boxes else None,
                                       self.cfg.batch_size)

  def curves(self, train_feats: dict, test_feats: dict) -> dict:
    d, cfg = self.data, self.cfg
    return {layer: {str(n): accs for n, accs in probes.label_curve(
        train_feats[layer], d.train_labels, test_feats[layer], d.test_labels, cfg.label_sizes,
        cfg.seeds).items()} for layer in train_feats}

  def tower_row(self, name: str, view: str) -> dict:
    start = time.time()
    v = self.view(view)
    tr, te = (self.features(name, *v[s]) for s in ("train", "test"))
    self.train_pre[(name, view)] = tr["pre_projection"]      # the audit's probe reads it again
    row = {"tower": name, "view": view, "curves": self.curves(tr, te),
           "chance": probes.chance(self.data.test_labels)}
    model, params = self.params(name)
    tok = self.tokenizer(model.config)
    if tok is not None:
      emb = self.prompt_embeddings(name, tok)
      row["zero_shot"] = prompts.zero_shot_accuracy(te["embedding"], emb, self.data.test_labels)
      row["prompt_separation"] = prompts.prompt_separation(emb)
    if view == "frame" and self.cfg.has_boxes and self.cfg.size_strata > 1:
      row["strata"] = self.strata(tr, te)
    row["seconds"] = time.time() - start
    return row

  def prompt_embeddings(self, name: str, tok):
    model, params = self.params(name)
    encode = jax.jit(lambda ids: model.apply({"params": params}, ids,
                                             method=model.encode_text)["embedding"])
    return prompts.prompt_embeddings(encode, tok, self.data.class_names, self.cfg.templates)

  def strata(self, tr: dict, te: dict) -> dict:
    """Probe accuracy (all training labels) per object-size stratum of the test boxes."""
    d = self.data
    areas = crops.box_area(d.test_boxes)
    edges = crops.strata_edges(areas, self.cfg.size_strata)
    stratum = crops.size_strata(areas, edges)
    out = {"edges": [float(e) for e in edges], "counts": np.bincount(
        stratum, minlength=len(edges) + 1).tolist(), "layers": {}}
    for layer in ("pre_projection", "embedding"):
      scores = probes.ridge_classifier(tr[layer], d.train_labels)(te[layer])
      hit = scores.argmax(1) == d.test_labels
      out["layers"][layer] = [float(hit[stratum == s].mean()) if np.any(stratum == s) else None
                              for s in range(len(edges) + 1)]
    return out

  def pre_projection(self, name: str, images) -> np.ndarray:
    """The pre-projection feature of ``images`` (the audit's and the placement maps' probe input)."""
    return self.features(name, images, np.full((len(images), 2), 0.5))["pre_projection"]

  def pixels_row(self, view: str) -> dict:
    v = self.view(view)
    side = min(PIXEL_SIDE, self.data.frame_size)
    small = {s: np.asarray(jax.image.resize(v[s][0], (len(v[s][0]), side, side, 3), "linear"))
             for s in v}
    return {"tower": PIXELS, "view": view, "curves": self.curves(
        {"pixels": small["train"]}, {"pixels": small["test"]}),
            "chance": probes.chance(self.data.test_labels)}

  def audit_row(self, name: str, view: str) -> dict:
    """Translations (whole and fractional patches, cyclic and non-wrapping) and 90-degree
    rotations of ``view``, read by a ridge probe on the pre-projection feature."""
    cfg, d = self.cfg, self.data
    v = self.view(view)
    model, _ = self.params(name)
    pre = functools.partial(self.pre_projection, name)
    train = self.train_pre.get((name, view))
    classify = probes.ridge_classifier(pre(v["train"][0]) if train is None else train, d.train_labels)
    x = v["test"][0][:cfg.audit_examples]
    pixels_per_patch = d.frame_size / model.config.vision.grid
    transforms = {}
    for s in cfg.audit_shifts:
      step = max(1, int(round(s * pixels_per_patch)))
      for wrap in (True, False):
        transforms[f"shift{s:g}p_{'cyclic' if wrap else 'edge'}"] = functools.partial(
            audit.shift, dy=step, dx=step, wrap=wrap)
    for k in (1, 2, 3):
      transforms[f"rot{90 * k}"] = functools.partial(np.rot90, k=k, axes=(1, 2))
    out = audit.audit_transforms(lambda batch: classify(pre(batch)), x, transforms,
                                 cfg.batch_size)
    return {"tower": name, "view": view, "examples": len(x), "transforms": out,
            "accuracy": float(np.mean(classify(pre(x)).argmax(1) == d.test_labels[:len(x)]))}

  def placement_row(self, name: str) -> dict:
    """The object (a tight crop) pasted at every grid position; the probe is trained on objects
    pasted at the centre. Accuracy per position (row-major ``grid x grid``)."""
    cfg, d = self.cfg, self.data
    side = max(4, int(round(cfg.placement_scale * d.frame_size)))
    objects = {s: crops.view(images, boxes, 1.0, side)[0] for s, images, boxes in
               (("train", d.train_images, d.train_boxes), ("test", d.test_images, d.test_boxes))}
    centre = ((d.frame_size - side) // 2,) * 2
    pre = functools.partial(self.pre_projection, name)
    classify = probes.ridge_classifier(pre(crops.paste(objects["train"], d.frame_size, centre)),
                                       d.train_labels)
    test = objects["test"][:cfg.audit_examples or len(objects["test"])]
    labels = d.test_labels[:len(test)]
    positions = crops.grid_positions(d.frame_size, side, cfg.placement_grid)
    acc = [float(np.mean(classify(pre(crops.paste(test, d.frame_size, p))).argmax(1) == labels))
           for p in positions]
    return {"tower": name, "grid": cfg.placement_grid, "object_side": side, "positions": positions,
            "accuracy": acc, "centre_accuracy": float(np.mean(classify(pre(crops.paste(
                test, d.frame_size, centre))).argmax(1) == labels))}


def audit_view(tower_rows: list[dict]) -> str:
  """The colour view whose pre-projection probe (all labels) is most accurate: where the audited
  classifier has something to lose (the first such view on ties)."""
  colour = [r for r in tower_rows if not r["view"].endswith("_grey")]
  best = max(colour, key=lambda r: np.mean(r["curves"]["pre_projection"][max(
      r["curves"]["pre_projection"], key=int)]))
  return best["view"]
