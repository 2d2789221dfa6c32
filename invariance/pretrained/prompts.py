"""Zero-shot classification from prompt ensembles, and how well a text tower separates the prompts.

``prompt_embeddings`` embeds every (class, template) prompt: ``(K, T, E)``, L2-normalised. The
ensemble of a class is the normalised mean over its templates (CLIP paper, section 3.1.4);
``zero_shot_accuracy`` classifies normalised image embeddings by the largest cosine with an
ensemble. ``prompt_separation`` asks whether the text tower tells the classes apart at all: each
template's prompt is classified by the ensembles of the other templates (leave one template out),
and the mean cosine between class ensembles is reported (1 = the tower sees one class).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def normalise(x, axis: int = -1) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Every template filled with every class name, class-major (``K * T`` strings)."""
  for t in templates:
    if t.count("{}") != 1:
      raise ValueError(f"prompt template {t!r}: allowed a string with exactly one '{{}}'")
  return [t.format(name) for name in class_names for t in templates]


def prompt_embeddings(encode_text: Callable, tokenize: Callable, class_names: Sequence[str],
                      templates: Sequence[str]) -> np.ndarray:
  """``(K, T, E)`` normalised text embeddings; ``encode_text(ids) -> (N, E)``."""
  emb = np.asarray(encode_text(tokenize(prompts(class_names, templates))))
  return normalise(emb.reshape(len(class_names), len(templates), -1))


def ensemble(prompt_emb_KTE) -> np.ndarray:
  return normalise(np.asarray(prompt_emb_KTE).mean(axis=1))


def zero_shot_accuracy(image_emb_NE, prompt_emb_KTE, labels_N) -> float:
  scores = normalise(image_emb_NE) @ ensemble(prompt_emb_KTE).T
  return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels_N)))


def prompt_separation(prompt_emb_KTE) -> dict:
  emb = np.asarray(prompt_emb_KTE, np.float64)
  k, t, _ = emb.shape
  correct = []
  for j in range(t):
    if t == 1:
      break
    others = ensemble(np.delete(emb, j, axis=1))
    correct.append(np.argmax(emb[:, j] @ others.T, axis=1) == np.arange(k))
  ens = ensemble(emb)
  cos = ens @ ens.T
  off = cos[~np.eye(k, dtype=bool)]
  return {"leave_one_template_out": float(np.mean(correct)) if correct else None,
          "mean_cosine_between_classes": float(off.mean()) if k > 1 else None,
          "max_cosine_between_classes": float(off.max()) if k > 1 else None}
