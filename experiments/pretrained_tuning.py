"""Post-hoc recovery on a pretrained tower: the recovery study's methods (``invariance.recovery``)
applied to a real CLIP / SigLIP image tower with a linear head on its pre-projection feature.

* ``lpft``: the head starts as a logistic-regression probe on the frozen features (``probe_head``),
  then tower and head train;
* ``lastblock``: a zero head; only the last encoder block, the final LayerNorm, the pooling head
  (SigLIP's MAP head) and the linear head train;
* ``finetune``: a zero head; everything trains.

Adam at a constant ``--recovery_learning_rate`` for ``--recovery_steps`` (no early stopping: the
step budget is stated and equal for every method), one run per seed (batch order and step keys);
the frozen tower's probe on the same labels is the row's reference. The first view of the study is
used (the whole frame by default).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from invariance import dashcam
from invariance import losses
from invariance import metrics
from invariance import probes
from invariance import recovery
from invariance import train

from invariance.pretrained import config as tower_config
from invariance.pretrained import towers


class Classifier(nn.Module):
  config: tower_config.TowerConfig
  classes: int
  dtype: Any = None

  @nn.compact
  def __call__(self, images_NHWC):
    feats = towers.VisionTower(self.config, self.dtype, name="visual")(images_NHWC)["pre_projection"]
    logits = nn.Dense(self.classes, kernel_init=nn.initializers.zeros, name="head")(feats)
    return logits.astype(jnp.float32)


def trainable(method: str, params, layers: int):
  """``multi_transform`` labels: which leaves ``method`` trains."""
  if method != "lastblock":
    return jax.tree.map(lambda _: "train", params)
  keep = {f"block_{layers - 1}", "ln_post", "map_head", "head"}

  def label(path, _):
    names = {getattr(k, "key", None) for k in path}
    return "train" if names & keep else "frozen"

  return jax.tree_util.tree_map_with_path(label, params)


def row(study, workdir, name: str, method: str) -> dict:
  cfg, data = study.cfg, study.data
  model, tower_params = study.params(name)
  view = study.view(cfg.views[0][0])
  x_tr, x_te = (np.asarray(towers.prepare_images(view[s][0], model.config)) for s in ("train", "test"))
  y_tr, y_te = data.train_labels, data.test_labels
  classes = int(max(y_tr.max(), y_te.max())) + 1
  clf = Classifier(model.config, classes, model.dtype)
  frozen_tr, frozen_te = (study.features(name, *view[s])["pre_projection"] for s in ("train", "test"))
  head = (recovery.probe_head(frozen_tr, y_tr, classes) if method == "lpft" else
          {"kernel": np.zeros((frozen_tr.shape[1], classes), np.float32),
           "bias": np.zeros(classes, np.float32)})
  start = {"params": {"visual": tower_params["visual"], "head": jax.tree.map(np.asarray, head)}}
  labels = trainable(method, start, model.config.vision.layers)
  optimizer = optax.multi_transform(
      {"train": optax.adam(cfg.recovery_learning_rate), "frozen": optax.set_to_zero()}, labels)

  def loss_fn(params, batch, rng):
    del rng
    logits = clf.apply(params, batch["images"])
    return losses.cross_entropy(logits, batch["labels"]), {"acc": metrics.accuracy(logits, batch["labels"])}

  predict = jax.jit(lambda p, x: clf.apply(p, x).argmax(-1))
  accs = []
  for seed in cfg.seeds:
    run = f"{name}__{method}"
    tc = train.TrainConfig(steps=cfg.recovery_steps, name=f"{run}/seed{seed}",
                           log_every=cfg.log_every, **{**workdir.train_paths(run, seed, cfg),
                                                       "checkpoint_dir": None})
    params, _ = dashcam.fit_classifier(loss_fn, start, x_tr, y_tr, cfg.recovery_batch_size, seed,
                                       optimizer, tc)
    hits = np.concatenate([np.asarray(predict(params, x_te[i:i + cfg.batch_size]))
                           for i in range(0, len(x_te), cfg.batch_size)]) == y_te
    accs.append(float(hits.mean()))
  frozen = probes.ridge_classifier(frozen_tr, y_tr)(frozen_te).argmax(1) == y_te
  return {"tower": name, "method": method, "test_acc": accs, "frozen_probe_acc": float(frozen.mean()),
          "steps": cfg.recovery_steps, "learning_rate": cfg.recovery_learning_rate}
