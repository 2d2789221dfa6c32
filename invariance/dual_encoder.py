"""A CLIP-style dual encoder (Flax linen) for dashcam scenes and their captions.

* Image tower: three 3x3 convolutions (widths 16, 32, 32; strides 2, 2, 1 keep it cheap on 32x32
  scenes) with ReLU, a global average pool, a dense ReLU layer (``penultimate``) and a linear
  projection to ``embed_dim``. ``image_features`` also returns every conv block's map pooled to an
  8x8 grid (``block{k}_grid``) and globally (``block{k}_pool``).
* Text tower: token embeddings, mean-pooled over the non-pad tokens (id 0 is padding), an MLP and a
  linear projection to ``embed_dim``. Captions are short bags of words; their counts (mean pooling
  keeps them) already tell every caption the policies produce apart.
* Both embeddings are L2-normalised. The loss's learnable scalars are parameters of the module:
  ``log_scale`` for ``loss="clip"``, ``t_prime`` and ``bias`` for ``loss="siglip"`` (initialised as
  in ``invariance.contrastive``; ``siglip_bias`` overrides the bias's initial value, e.g.
  ``siglip_bias_for_batch(B)``).

Methods (use with ``model.apply(params, x, method=...)``): ``embed_image``, ``embed_text``,
``image_features`` (dict with ``block{k}_grid``, ``block{k}_pool``, ``penultimate``, ``embedding``) and
``__call__`` (both embeddings). ``make_loss_fn(model)`` gives the ``train.fit`` loss over batches
with ``images`` (N, H, W, 3) and ``tokens`` (N, L); ``make_project_fn(model)`` the ``train.fit``
projection that clamps CLIP's ``log_scale`` parameter at ln 100 after every update. ``Jitted``
holds one model's compiled entry points (init, image features, text embedding, loss).

``LightClassifier``: the same image tower (same submodule name, so a dual encoder's tower slots in
with ``with_tower``) plus a linear head on its penultimate layer; ``make_classifier_loss_fn``;
``JittedClassifier`` (its compiled entry points).

``param_count`` / ``training_bytes``: the size of a dual encoder without building it (to refuse a
size that cannot fit before any work).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invariance import contrastive
from invariance import metrics
from invariance import losses

LOSSES = ("clip", "siglip")


class ImageTower(nn.Module):
  """Conv stack -> global average pool -> dense ReLU, returning the features probes look at.

  For each conv block k = 1, 2, 3 (after its ReLU): ``block{k}_grid``, the map average-pooled to a
  ``grid x grid`` layout and flattened (at 8 x 8 on a 32 x 32 scene a cell is 2-4 pixels, so a
  small object such as the 2 x 2 lamp keeps its place instead of being averaged over the frame),
  and ``block{k}_pool``, its global average. ``penultimate``: the dense ReLU layer the projection
  reads (on ``block3_pool``).
  """

  widths: Sequence[int] = (16, 32, 32)
  strides: Sequence[int] = (2, 2, 1)
  hidden: int = 128
  grid: int = 8
  dtype: Any = None           # computation dtype (None: the inputs'); parameters stay float32

  @nn.compact
  def __call__(self, images_NHWC) -> dict:
    chex.assert_rank(images_NHWC, 4)
    x, feats = images_NHWC, {}
    for i, (width, stride) in enumerate(zip(self.widths, self.strides)):
      x = nn.relu(nn.Conv(width, (3, 3), strides=(stride, stride), padding="SAME",
                          dtype=self.dtype, name=f"conv{i}")(x))
      feats[f"block{i + 1}_grid"] = grid_pool(x, min(self.grid, x.shape[1]))
      feats[f"block{i + 1}_pool"] = jnp.mean(x, axis=(1, 2))
    pooled_NC = feats[f"block{len(self.widths)}_pool"]
    dense = nn.Dense(self.hidden, dtype=self.dtype, name="dense")
    return {**feats, "penultimate": nn.relu(dense(pooled_NC))}


def grid_pool(maps_NHWC, grid: int):
  """Average pool to ``grid x grid`` cells, flattened to (N, grid * grid * C)."""
  n, h, w, c = maps_NHWC.shape
  if h % grid or w % grid:
    raise ValueError(f"grid={grid} does not divide the {h}x{w} feature map; allowed: a divisor")
  cells = maps_NHWC.reshape(n, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))
  return cells.reshape(n, grid * grid * c)


class TextTower(nn.Module):
  """Token embeddings, masked mean pool over non-pad tokens, MLP."""

  vocab_size: int
  width: int = 64
  hidden: int = 128
  dtype: Any = None           # computation dtype (None: float32); parameters stay float32

  @nn.compact
  def __call__(self, tokens_NL):
    chex.assert_rank(tokens_NL, 2)
    emb_NLW = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="embed")(tokens_NL)
    mask_NL1 = (tokens_NL != 0)[..., None].astype(emb_NLW.dtype)
    pooled_NW = jnp.sum(emb_NLW * mask_NL1, axis=1) / jnp.maximum(jnp.sum(mask_NL1, axis=1), 1.0)
    return nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(pooled_NW))


class DualEncoder(nn.Module):
  vocab_size: int
  embed_dim: int = 8
  loss: str = "clip"
  widths: Sequence[int] = (16, 32, 32)
  strides: Sequence[int] = (2, 2, 1)
  hidden: int = 128
  text_width: int = 64
  siglip_bias: Optional[float] = None     # None: contrastive.SIGLIP_INIT_BIAS (-10)
  dtype: Any = None           # towers' computation dtype; embeddings and the loss in float32

  def setup(self):
    if self.loss not in LOSSES:
      raise ValueError(f"loss={self.loss!r} is unknown; allowed: {', '.join(LOSSES)}")
    if self.embed_dim < 1:
      raise ValueError(f"embed_dim={self.embed_dim} is invalid; allowed: an int >= 1")
    self.image_tower = ImageTower(self.widths, self.strides, self.hidden, dtype=self.dtype)
    self.image_proj = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.text_tower = TextTower(self.vocab_size, self.text_width, self.hidden, dtype=self.dtype)
    self.text_proj = nn.Dense(self.embed_dim, dtype=self.dtype)
    if self.loss == "clip":
      self.log_scale = self.param("log_scale", lambda _: contrastive.init_clip_temperature())
    else:
      t_prime, bias = contrastive.init_siglip_params()
      if self.siglip_bias is not None:
        bias = jnp.asarray(self.siglip_bias, jnp.float32)
      self.t_prime = self.param("t_prime", lambda _: t_prime)
      self.bias = self.param("bias", lambda _: bias)

  def image_features(self, images_NHWC) -> dict:
    """``block{k}_grid`` (N, 64 widths[k-1]), ``block{k}_pool`` (N, widths[k-1]), ``penultimate``
    (N, hidden) and ``embedding`` (N, embed_dim), see ``ImageTower``."""
    feats = self.image_tower(images_NHWC)
    emb = self.image_proj(feats["penultimate"]).astype(jnp.float32)
    return {**feats, "embedding": contrastive.l2_normalize(emb)}

  def embed_image(self, images_NHWC):
    return self.image_features(images_NHWC)["embedding"]

  def embed_text(self, tokens_NL):
    return contrastive.l2_normalize(self.text_proj(self.text_tower(tokens_NL)).astype(jnp.float32))

  def loss_params(self) -> tuple:
    """The loss's learnable scalars: ``(log_scale,)`` or ``(t_prime, bias)``."""
    return (self.log_scale,) if self.loss == "clip" else (self.t_prime, self.bias)

  def __call__(self, images_NHWC, tokens_NL):
    img_ND, txt_ND = self.embed_image(images_NHWC), self.embed_text(tokens_NL)
    chex.assert_shape([img_ND, txt_ND], (images_NHWC.shape[0], self.embed_dim))
    return img_ND, txt_ND, self.loss_params()


def siglip_bias_for_batch(batch_size: int) -> float:
  """The SigLIP bias that makes the initial pair probability the batch's share of positives:
  sigmoid(b) = 1 / batch_size for unrelated (cosine 0) pairs, i.e. b = -log(batch_size - 1).
  The paper's -10 is this value for a batch of about 22,000; at 128 it is -4.84."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
    raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an int >= 2")
  return -float(np.log(batch_size - 1))


def make_loss_fn(model: DualEncoder, axis_name: Optional[str] = None,
                 batch_size: Optional[int] = None,
                 tiled_threshold: int = contrastive.TILED_THRESHOLD,
                 multi_positive: bool = False) -> Callable:
  """``loss_fn(params, batch, rng) -> (loss, aux)`` for ``train.fit`` (batch: images, tokens).

  ``train.fit`` jits over the global batch (XLA partitions it), so ``axis_name`` stays None there;
  pass one only when calling the loss per device under ``shard_map`` / ``pmap``. The loss is
  ``contrastive.loss_by_name``'s: for CLIP without ``axis_name``, ``clip_loss_fused``; with the
  global ``batch_size`` given, a batch of ``tiled_threshold`` or more uses the tiled loss, which
  never holds the B x B logits. ``multi_positive``: pairs
  whose captions are identical are positives, not negatives (``contrastive.*_multi_positive``;
  one device, materialised logits, so not with ``axis_name`` or the tiled loss).
  """
  if multi_positive:
    if axis_name is not None or (batch_size is not None and tiled_threshold
                                 and batch_size >= tiled_threshold):
      raise ValueError("multi_positive=True needs one device and a batch below tiled_threshold "
                       f"(batch_size={batch_size}, tiled_threshold={tiled_threshold}); allowed: "
                       "multi_positive=False there")
    multi = {"clip": contrastive.clip_loss_multi_positive,
             "siglip": contrastive.siglip_loss_multi_positive}[model.loss]
    loss = lambda img, txt, *scalars, tokens: multi(img, txt, *scalars,
                                                   contrastive.same_rows(tokens))
  else:
    plain = contrastive.loss_by_name(model.loss, batch_size or 1,
                                     tiled_threshold if batch_size else 0, axis_name=axis_name)
    loss = lambda img, txt, *scalars, tokens: plain(img, txt, *scalars)

  def loss_fn(params, batch, rng):
    del rng
    img_ND, txt_ND, scalars = model.apply(params, batch["images"], batch["tokens"])
    value = loss(img_ND, txt_ND, *scalars, tokens=batch["tokens"])
    if model.loss == "clip":
      aux = {"scale": contrastive.clip_logit_scale(scalars[0])}
    else:
      aux = {"t": jnp.exp(scalars[0]), "b": scalars[1]}
    return value, aux

  return loss_fn


def clip_project(params):
  """``params`` with CLIP's ``log_scale`` clamped at ln 100 (``contrastive.clip_log_scale_clamp``),
  applied by ``train.fit`` after every update (as open_clip's training loop does)."""
  inner = dict(params["params"])
  inner["log_scale"] = contrastive.clip_log_scale_clamp(inner["log_scale"])
  return {**params, "params": inner}


def make_project_fn(model: DualEncoder) -> Optional[Callable]:
  """The ``project`` argument of ``train.fit`` for ``model``: ``clip_project`` for CLIP (one
  function object, so ``train.fit`` compiles one step per loss and optimizer), None for SigLIP."""
  return clip_project if model.loss == "clip" else None


def example_inputs(image_size: int = 32, max_len: int = 8):
  """Dummy ``(images, tokens)`` of batch 1 for ``model.init``."""
  return (jnp.zeros((1, image_size, image_size, 3), jnp.float32), jnp.ones((1, max_len), jnp.int32))


class Jitted:
  """One dual encoder's compiled entry points; build one per model and reuse it (each of its
  functions, and ``train.fit``'s step for its ``loss_fn``, compiles once)."""

  def __init__(self, model: DualEncoder, image_size: int = 32, max_len: int = 8,
               batch_size: Optional[int] = None,
               tiled_threshold: int = contrastive.TILED_THRESHOLD, multi_positive: bool = False):
    self.model, self.example = model, example_inputs(image_size, max_len)
    self._init = jax.jit(model.init)
    self.image_features = jax.jit(lambda p, x: model.apply(p, x, method="image_features"))
    self.embed_image = lambda p, x: self.image_features(p, x)["embedding"]
    self.embed_text = jax.jit(lambda p, t: model.apply(p, t, method="embed_text"))
    self.loss_fn = make_loss_fn(model, batch_size=batch_size, tiled_threshold=tiled_threshold,
                                multi_positive=multi_positive)
    self.project = make_project_fn(model)

  def init(self, key):
    return self._init(key, *self.example)

  def zeros(self):
    """numpy zeros shaped like the params (e.g. ``train.load_params``'s ``like``), no compile."""
    shapes = jax.eval_shape(self.model.init, jax.random.key(0), *self.example)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


# -- a classifier on the image tower -------------------------------------------------------------
class LightClassifier(nn.Module):
  """The dual encoder's image tower (submodule ``image_tower``, so pretrained weights slot in) plus
  a linear head on its penultimate layer; returns ``penultimate`` and ``logits``."""

  widths: Sequence[int] = (16, 32, 32)
  strides: Sequence[int] = (2, 2, 1)
  hidden: int = 128
  classes: int = 2

  @nn.compact
  def __call__(self, images_NHWC) -> dict:
    feats = ImageTower(self.widths, self.strides, self.hidden, name="image_tower")(images_NHWC)
    return {"penultimate": feats["penultimate"],
            "logits": nn.Dense(self.classes, name="head")(feats["penultimate"])}


def classifier_for(model: DualEncoder, classes: int) -> LightClassifier:
  """A classifier whose tower has ``model``'s image-tower architecture."""
  return LightClassifier(tuple(model.widths), tuple(model.strides), model.hidden, classes)


def with_tower(classifier_params, tower):
  """A copy of ``classifier_params`` whose image tower is ``tower`` (e.g. a dual encoder's
  ``params["params"]["image_tower"]``); the head is kept."""
  return {**classifier_params, "params": {**classifier_params["params"], "image_tower": tower}}


class JittedClassifier:
  """A ``LightClassifier`` on ``model``'s image-tower architecture: its jitted init and apply and
  its ``train.fit`` loss (build one per model and reuse it)."""

  def __init__(self, model: DualEncoder, classes: int, image_size: int = 32):
    self.module = classifier_for(model, classes)
    self.example = example_inputs(image_size)[0]
    self._init = jax.jit(self.module.init)
    self.apply = jax.jit(self.module.apply)
    self.loss_fn = make_classifier_loss_fn(self.module)

  def init(self, key, tower=None):
    """numpy params: all random, or ``tower`` (a dual encoder's ``params["params"]
    ["image_tower"]``) under a random head."""
    params = jax.device_get(self._init(key, self.example))
    return params if tower is None else with_tower(params, tower)


def make_classifier_loss_fn(classifier: LightClassifier) -> Callable:
  """``loss_fn(params, batch, rng) -> (cross-entropy, {"acc"})`` over ``images`` and ``labels``."""

  def loss_fn(params, batch, rng):
    del rng
    logits_NK = classifier.apply(params, batch["images"])["logits"]
    return losses.cross_entropy(logits_NK, batch["labels"]), {
        "acc": metrics.accuracy(logits_NK, batch["labels"])}

  return loss_fn


# -- sizes ----------------------------------------------------------------------------------------
def param_count(vocab_size: int, embed_dim: int, loss: str = "clip",
                widths: Sequence[int] = (16, 32, 32), hidden: int = 128,
                text_width: int = 64) -> int:
  """The number of parameters of ``DualEncoder(vocab_size, embed_dim, loss, widths, ...)``
  (the 3x3 convolutions' count does not depend on their strides), computed without building it:
  exact for any size, also one that could never be allocated."""
  convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip((3,) + tuple(widths[:-1]), widths))
  image = convs + widths[-1] * hidden + hidden + hidden * embed_dim + embed_dim
  text = vocab_size * text_width + text_width * hidden + hidden + hidden * embed_dim + embed_dim
  return image + text + (1 if loss == "clip" else 2)


def training_bytes(vocab_size: int, embed_dim: int, batch_size: int, loss: str = "clip") -> float:
  """A lower estimate of the memory one training step of the dual encoder needs: float32
  params, gradients and Adam's two moments, plus both towers' embeddings of a batch."""
  return 4.0 * (4 * param_count(vocab_size, embed_dim, loss) + 2 * batch_size * embed_dim)
