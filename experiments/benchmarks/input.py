"""Input suite: examples/s of the grain input path, against the train step's consumption.

What is timed is ``invariance.data.pipeline.train_batch_fn`` - the function every study hands to
``train.fit`` - producing the global batches of steps 0, 1, ..., ``steps - 1`` in order (a fresh
``batch_at`` per repeat, so the first epoch's permutation is inside the timing), at the default
flagfiles' sizes:

  * ``orbit``        batch 64 of the curated training split: 1347 train digits x 8 placements =
                     10776 examples of ``images`` (24, 24, 1) float32, ``labels``, ``positions``
                     (2,) and ``elements`` int32 (experiments/configs/orbit.flags);
  * ``contrastive``  batch 128 of 20000 captioned scenes: ``images`` (32, 32, 3) float32 and
                     ``tokens`` (max_len,) int32 (experiments/configs/contrastive.flags; the
                     recovery study pretrains on the same).

The arrays are random with those shapes and dtypes: the batch assembly does not look at values,
and the one-off TFDS read and curation before training are not part of the per-step cost.
``headroom(input_result, train_result)`` divides each input rate by the fastest rate at which the
train suite's update steps of that study consume examples (goal: >= 10x). Needs grain, not tfds.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Dict, Optional

import numpy as np

from invariance.data import captions

HEADROOM_GOAL = 10.0
# input row -> the train suite's models fed by it
CONSUMERS = {"orbit": ("orbit/cnn_gap", "orbit/orbit_full"), "contrastive": ("contrastive/clip",)}


def _arrays(name: str) -> Dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  if name == "orbit":
    n = 1347 * 8
    return {"images": rng.random((n, 24, 24, 1), np.float32),
            "labels": rng.integers(0, 10, n).astype(np.int32),
            "positions": rng.integers(12, 17, (n, 2)).astype(np.int32),
            "elements": rng.integers(0, 576, n).astype(np.int32)}
  n, tok = 20000, captions.Tokenizer()
  return {"images": rng.random((n, 32, 32, 3), np.float32),
          "tokens": rng.integers(0, tok.vocab_size, (n, tok.max_len)).astype(np.int32)}


BATCH = {"orbit": 64, "contrastive": 128}


def measure(arrays: Dict[str, np.ndarray], batch_size: int, steps: int = 200,
            repeats: int = 5) -> Dict[str, Any]:
  """Median (over ``repeats``) wall time of ``steps`` consecutive ``batch_at`` calls."""
  from invariance.data import pipeline  # pylint: disable=import-outside-toplevel  (grain inside)
  times = []
  for r in range(repeats + 1):                       # the first round warms imports and caches
    batch_at = pipeline.train_batch_fn(arrays, batch_size, seed=r)
    start = time.perf_counter()
    for step in range(steps):
      batch_at(step)
    if r:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  bytes_per_example = sum(v[0].nbytes for v in arrays.values())
  return {"batch": batch_size, "steps": steps, "examples": len(next(iter(arrays.values()))),
          "median_s": median, "min_s": min(times), "repeats": repeats,
          "examples_per_s": batch_size * steps / median,
          "ms_per_batch": 1e3 * median / steps,
          "mb_per_s": batch_size * steps * bytes_per_example / median / 2**20}


def run(steps: int = 200, repeats: int = 5) -> Dict[str, Any]:
  """Examples/s of the grain path at the orbit and contrastive defaults (see module docstring)."""
  rows = {name: measure(_arrays(name), BATCH[name], steps, repeats) for name in BATCH}
  return {"suite": "input", "rows": rows}


def headroom(input_result: Dict[str, Any], train_result: Dict[str, Any]) -> Dict[str, Any]:
  """Input examples/s / train-step examples/s for each study, against the fastest measurement of
  its models in the train suite's result (1-device process, 1-device mesh or all devices)."""
  train_rows = {row["model"]: row for row in train_result.get("rows", [])}
  out = {}
  for name, row in input_result["rows"].items():
    rates = []
    for model in CONSUMERS[name]:
      if model in train_rows:
        t = train_rows[model]
        rates += [m["examples_per_s"] for m in t.get("per_devices", {}).values()]
        if "single_process" in t:
          rates.append(t["single_process"]["examples_per_s"])
    consume: Optional[float] = max(rates) if rates else None
    ratio = row["examples_per_s"] / consume if consume else None
    out[name] = {"input_examples_per_s": row["examples_per_s"],
                 "train_examples_per_s": consume, "headroom": ratio,
                 "met": None if ratio is None else ratio >= HEADROOM_GOAL}
  return {"goal_at_least": HEADROOM_GOAL, "studies": out}


def format_table(result: Dict[str, Any]) -> str:
  """The input suite's lines: examples/s per study and the headroom over the train step."""
  lines = ["input suite (grain train_batch_fn, global batches by step):"]
  for name, h in result["headroom"]["studies"].items():
    ratio = "n/a" if h["headroom"] is None else (
        f"{h['headroom']:.0f}x the fastest train step "
        f"({h['train_examples_per_s']:.0f} ex/s; goal >= {HEADROOM_GOAL:g}x: "
        f"{'met' if h['met'] else 'NOT met'})")
    lines.append(f"  {name}: {h['input_examples_per_s']:.0f} examples/s, {ratio}")
  return "\n".join(lines)


if __name__ == "__main__":
  import json
  print(json.dumps(run(), indent=1))
