"""Recovering what caption curation left out: the recovery study's recipes and read-outs (no absl).

Recipes (a light classifier = ``dual_encoder.LightClassifier``: image tower + linear head):

* ``probe_head(features, labels, classes)`` - the linear-probe stage of LP-FT (Kumar et al. 2022,
  "Fine-tuning can distort pretrained features"): logistic regression on the frozen features as
  one dense layer (optionally on standardised features, folded in); ``with_head`` puts it on a
  classifier.
* ``freeze(optimizer, params, frozen)`` - ``optax.multi_transform``: the named image-tower
  submodules get zero updates (last-block fine-tuning freezes ``conv0`` and ``conv1``, so only the
  last conv, the dense layer and the head train).
* ``peak_adam(peak_lr, relative)`` - Adam at ``peak_lr * relative(step)`` with the peak held in
  the optimizer state, so that every learning rate of a grid runs one compiled program.
* ``select(candidates)`` - the learning rate (or any candidate) with the best validation score.

Read-outs:

* ``crossing(ns, accs, target)`` / ``smallest_n(ns, accs_by_seed, target)`` - the smallest number
  of labels reaching a target accuracy, per seed (interpolated in log2 n between the grid points
  around the first crossing) and over seeds (geometric mean with a 95% t-interval in log2 n).
* ``flag_collapsed(rows)`` - runs that end at chance where the method otherwise works: at chance
  (accuracy < chance + ``margin``) while the median of the other seeds of the same cell reaches
  ``works`` (halfway to perfect), or while the same seed reached it at a smaller n. Too few labels
  for every seed is not a collapse; an accuracy that falls as labels grow is.
* ``cap_limited(row, cap, every)`` - a tuned run stopped by the step cap while still improving
  (under-trained at that cap).
* ``explain_collapse(row)`` - a one-line reading of such a run from its per-learning-rate record.
* ``mentions_seen(mentions, batch_size, seed, steps)`` - how many attribute-mentioning captions
  the first ``steps`` batches of ``pipeline.train_batch_fn(..., seed=seed)`` hold.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from invariance import probes
from invariance.data import pipeline

LAST_BLOCK_FROZEN = ("conv0", "conv1")     # last-block fine-tuning: these tower layers stay fixed
CHANCE_MARGIN = 0.1                        # "at chance": accuracy < chance + 0.1 (0.60 for 2 classes)


# -- recipes -------------------------------------------------------------------------------------
def probe_head(features_ND, labels_N, classes: int, c: float = 1.0, seed: int = 0,
               scaling: str = "global") -> dict:
  """``{"kernel": (D, classes), "bias": (classes,)}``: a dense layer on the raw ``features_ND``
  whose argmax equals the prediction of LogisticRegression(C=c) fitted on scaled features (the LP
  stage of LP-FT), the scaling folded into the layer. ``scaling``: ``"global"`` (centred, divided
  by one number, the features' overall standard deviation: C means the same whatever the
  features' units, and no feature gets a larger weight for being small), ``"per_feature"``
  (``probes.linear_probe``'s StandardScaler: its exact predictions, but a feature of tiny variance
  gets a huge weight, which makes fine-tuning through the head unstable) or ``"none"``.
  Labels with one class only: a head that always predicts it (as the probe does)."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel

  if scaling not in ("global", "per_feature", "none"):
    raise ValueError(f"scaling={scaling!r} is unknown; allowed: global, per_feature, none")
  x = np.asarray(features_ND, np.float64).reshape(len(features_ND), -1)
  y = np.asarray(labels_N)
  if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or (
      y.max() >= classes):
    raise ValueError(f"labels_N has shape {y.shape} dtype {y.dtype}; allowed: ints in "
                     f"[0, {classes}) of shape ({x.shape[0]},)")
  kernel, bias = np.zeros((x.shape[1], classes)), np.zeros(classes)
  present = np.unique(y)
  if len(present) == 1:
    bias[present[0]] = 1.0
    return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
  mean, scale = x.mean(axis=0), x.std(axis=0)
  scale[scale == 0.0] = 1.0                         # StandardScaler's rule for constant features
  if scaling == "global":
    scale = np.full_like(scale, (x - mean).std() or 1.0)
  elif scaling == "none":
    mean, scale = np.zeros_like(mean), np.ones_like(scale)
  probe = LogisticRegression(C=c, max_iter=probes.MAX_ITER, random_state=seed)
  with threadpool_limits(limits=1):
    probe.fit((x - mean) / scale, y)
  coef, intercept = probe.coef_, probe.intercept_
  if len(present) == 2:                             # binary: one logit for present[1] vs present[0]
    coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
  # Classes absent from the labels keep a very low logit (the probe never predicts them).
  bias[:] = -1e4
  kernel[:, present] = (coef / scale).T
  bias[present] = intercept - (coef / scale) @ mean
  return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}


def with_head(classifier_params, head: Mapping[str, np.ndarray]):
  """A copy of ``classifier_params`` whose ``head`` dense layer is ``head``."""
  inner = dict(classifier_params["params"])
  old = inner["head"]
  for k in ("kernel", "bias"):
    if np.shape(head[k]) != np.shape(old[k]):
      raise ValueError(f"head[{k!r}] has shape {np.shape(head[k])}; allowed: {np.shape(old[k])}")
  inner["head"] = {k: np.asarray(head[k], np.asarray(old[k]).dtype) for k in ("kernel", "bias")}
  return {**classifier_params, "params": inner}


def freeze_labels(params, frozen: Sequence[str]):
  """The ``multi_transform`` labels of classifier ``params``: ``"frozen"`` for every leaf under an
  image-tower submodule named in ``frozen``, ``"train"`` for the rest."""
  unknown = sorted(set(frozen) - set(params["params"]["image_tower"]))
  if unknown:
    raise ValueError(f"frozen={list(frozen)}: {unknown} are not image-tower layers; allowed: "
                     f"{sorted(params['params']['image_tower'])}")

  def label(path, _):
    names = [getattr(k, "key", None) for k in path]
    return "frozen" if "image_tower" in names and any(f in names for f in frozen) else "train"

  return jax.tree_util.tree_map_with_path(label, params)


def freeze(optimizer: optax.GradientTransformation, frozen: Sequence[str]
           ) -> optax.GradientTransformation:
  """``optimizer`` on every parameter but the image-tower layers named in ``frozen`` (their
  updates are zero and they hold no optimizer state)."""
  return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()},
                               lambda params: freeze_labels(params, frozen))


class PeakState(NamedTuple):
  peak: jax.Array            # the peak learning rate, a float32 scalar (data, not a constant)


def peak_adam(peak_lr: float, relative: Callable) -> optax.GradientTransformation:
  """``optax.adam(lambda step: peak_lr * relative(step))`` with ``peak_lr`` held in the optimizer
  state instead of the compiled program: the optimizers of a learning-rate grid trace to the same
  program, so XLA's persistent compilation cache compiles the update step once for the whole grid
  (``train.fit`` jits one step per optimizer object)."""
  if not peak_lr > 0:
    raise ValueError(f"peak_lr={peak_lr!r} is invalid; allowed: > 0")

  def init(params):
    del params
    return PeakState(jnp.asarray(peak_lr, jnp.float32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: -state.peak * u, updates), state

  return optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(relative),
                     optax.GradientTransformation(init, update))


def select(scores: Sequence[float]) -> int:
  """The index of the best (highest) validation score; the first among equals."""
  if not len(scores):
    raise ValueError("scores is empty; allowed: at least one candidate")
  return int(np.argmax(np.asarray(scores, np.float64)))


# -- read-outs -----------------------------------------------------------------------------------
def crossing(ns: Sequence[int], accs: Sequence[float], target: float) -> Optional[float]:
  """The smallest n at which ``accs`` (one seed's accuracy at each of the sorted ``ns``) reaches
  ``target``: the first grid point at or above it, interpolated linearly in log2 n from the point
  before it; ``ns[0]`` if the first point already reaches it; None if no point does."""
  ns, accs = list(ns), list(accs)
  if len(ns) != len(accs) or not ns or ns != sorted(ns):
    raise ValueError(f"ns={ns} and accs={accs}: allowed: equal lengths, ns sorted ascending")
  for i, (n, a) in enumerate(zip(ns, accs)):
    if a >= target:
      if i == 0:
        return float(n)
      lo, hi = math.log2(ns[i - 1]), math.log2(n)
      frac = (target - accs[i - 1]) / (a - accs[i - 1])
      return float(2 ** (lo + frac * (hi - lo)))
  return None


def smallest_n(ns: Sequence[int], accs_by_seed: Mapping[int, Sequence[float]], target: float
               ) -> dict:
  """Per seed ``crossing`` and a summary over seeds: ``per_seed`` {seed: n or None}, ``reached``
  (how many seeds), ``seeds``, ``at_first`` (seeds already at target at ``ns[0]``); when every
  seed reaches it, ``geo_mean`` and its 95% t-interval ``low`` / ``high`` (in log2 n; None for
  one seed), else ``median`` (None when half or more never reach it)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel  (comes with scikit-learn)

  ns = sorted(ns)
  per_seed = {seed: crossing(ns, accs, target) for seed, accs in accs_by_seed.items()}
  got = [v for v in per_seed.values() if v is not None]
  out = {"per_seed": per_seed, "reached": len(got), "seeds": len(per_seed),
         "at_first": sum(1 for accs in accs_by_seed.values() if accs[0] >= target),
         "geo_mean": None, "low": None, "high": None, "median": None}
  if not per_seed:
    return out
  ordered = sorted(v if v is not None else math.inf for v in per_seed.values())
  mid = len(ordered) // 2
  median = ordered[mid] if len(ordered) % 2 else math.sqrt(ordered[mid - 1] * ordered[mid])
  out["median"] = None if math.isinf(median) else float(median)
  if len(got) == len(per_seed):
    logs = np.log2(got)
    out["geo_mean"] = float(2 ** logs.mean())
    if len(logs) > 1:
      half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
      out["low"], out["high"] = float(2 ** (logs.mean() - half)), float(2 ** (logs.mean() + half))
  return out


def at_chance(acc: float, chance: float = 0.5, margin: float = CHANCE_MARGIN) -> bool:
  return acc < chance + margin


def works(chance: float = 0.5) -> float:
  """The accuracy at which a method clearly works: halfway from chance to perfect (0.75 for 2)."""
  return chance + (1.0 - chance) / 2


def cap_limited(row: dict, cap: int, every: int) -> bool:
  """Whether a tuned run's chosen learning rate ran into the step cap while still improving: not
  stopped by patience, and its best validation score came within the last two evaluations."""
  return (row["last_step"] >= cap and not row["stopped_early"]
          and row["best_step"] >= cap - 2 * every)


def flag_collapsed(rows: Sequence[dict], curve: Callable[[dict], str] = lambda r: r["method"],
                   metric: str = "light_acc", chance: float = 0.5,
                   margin: float = CHANCE_MARGIN) -> list[dict]:
  """The rows (each with ``n_labels``, ``seed`` and ``metric``) that end at chance where their
  method otherwise works (module docstring): at chance while the median of the other seeds of the
  same (curve, n) is at least ``works(chance)`` (halfway from chance to perfect), or while the
  same seed reached that at a smaller n. Each as ``{"curve", "n_labels", "seed", metric, "why"}``
  with ``why`` naming the rule: ``"other seeds work"`` and/or ``"this seed worked at a smaller
  n"``."""
  cells: dict = {}
  for r in rows:
    cells.setdefault((curve(r), r["n_labels"]), []).append(r)
  out = []
  for (name, n), rs in sorted(cells.items()):
    for r in sorted(rs, key=lambda r: r["seed"]):
      if not at_chance(r[metric], chance, margin):
        continue
      why = []
      others = [o[metric] for o in rs if o is not r]
      if others and float(np.median(others)) >= works(chance):
        why.append("other seeds work")
      smaller = [o[metric] for (c, m), os_ in cells.items() if c == name and m < n
                 for o in os_ if o["seed"] == r["seed"]]
      if any(a >= works(chance) for a in smaller):
        why.append("this seed worked at a smaller n")
      if why:
        out.append({"curve": name, "n_labels": n, "seed": r["seed"], metric: r[metric],
                    "why": " and ".join(why)})
  return out


def explain_collapse(row: dict, chance: float = 0.5, margin: float = CHANCE_MARGIN) -> str:
  """A reading of a collapsed tuned run from its ``lr_grid`` record (per learning rate: ``val_acc``,
  ``final_loss``, ``best_step``): did every learning rate fail on validation, and how did the
  training loss end (near ln K: the network outputs a constant; near 0: it fit its n labels)?"""
  grid = row.get("lr_grid") or []
  if not grid:
    return "no per-learning-rate record"
  parts = []
  failed = [g for g in grid if at_chance(g["val_acc"], chance, margin)]
  if len(failed) == len(grid):
    parts.append(f"validation at chance for every learning rate (best {max(g['val_acc'] for g in grid):.3f})")
  else:
    parts.append(f"validation chose lr {row['learning_rate']:g} (val {row['val_acc']:.3f})")
  ln_k = math.log(round(1 / chance))
  for g in grid:
    loss = g.get("final_loss")
    if loss is None:
      continue
    state = ("constant output" if abs(loss - ln_k) < 0.05 else
             "fits its labels" if loss < 0.1 else "partly fit")
    parts.append(f"lr {g['learning_rate']:g}: val {g['val_acc']:.3f}, final train loss "
                 f"{loss:.3f} ({state}), best step {g['best_step']}")
  return "; ".join(parts)


def mentions_seen(mentions_N, batch_size: int, seed: int, steps: int) -> int:
  """How many of the examples in the first ``steps`` batches of ``pipeline.train_batch_fn(arrays,
  batch_size, seed=seed)`` (over N examples) have ``mentions_N`` set (e.g. a caption that names the
  light), counted from the epoch permutations without building the batches."""
  mentions_N = np.asarray(mentions_N, bool)
  n, total, count = len(mentions_N), steps * batch_size, 0
  for epoch in range(-(-total // n) if total else 0):
    take = min(n, total - epoch * n)
    count += int(mentions_N[pipeline.epoch_order(n, seed, epoch)[:take]].sum())
  return count
