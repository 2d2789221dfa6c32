"""What the orbit study measures of a trained model: accuracies in and out of the training support,
the invariance audit over the group (split inside / outside the support) and the placement map."""
from __future__ import annotations

import numpy as np

from experiments import orbit_data
from experiments.orbit_config import EVAL_BATCH
from experiments.orbit_config import OrbitConfig
from invariance import audit
from invariance import evaluate
from invariance.data import curation


def accuracy(eval_fn, split: dict) -> float:
  return float(np.mean(evaluate.batched_apply(eval_fn, split["images"], EVAL_BATCH).argmax(-1)
                       == split["labels"]))


def placement_map(eval_fn, data: orbit_data.Data) -> list:
  """Accuracy of the test glyphs pasted at every non-wrapping position (row-major grid), all
  positions through ``eval_fn`` in one stream of full batches."""
  glyphs, n = data.glyphs, len(data.glyphs["labels"])
  canvases = np.concatenate([curation.paste(glyphs["images"], (data.group.height,) * 2,
                                            np.repeat(pos[None], n, 0)) for pos in data.grid])
  correct = (evaluate.batched_apply(eval_fn, canvases, EVAL_BATCH).argmax(-1)
             == np.tile(glyphs["labels"], len(data.grid)))
  return correct.reshape(len(data.grid), n).mean(1).tolist()


def measure(eval_fn, cfg: OrbitConfig, data: orbit_data.Data, seed: int,
            with_audit: bool = True) -> dict:
  """Accuracies, the audit over the group (split inside / outside the support) and the map."""
  row = {"acc_in_support": accuracy(eval_fn, data.test_in),
         "acc_out_of_support": accuracy(eval_fn, data.test_out)}
  if with_audit:
    elements = audit.eval_elements(data.group, cfg.eval_elements, seed)
    x = data.test_in["images"][:cfg.eval_examples]
    inside = (orbit_data.inside_mask(data, elements, data.test_in["positions"][:len(x)])
              if "positions" in data.test_in else None)
    inv = audit.audit(eval_fn, x, data.group, elements, inside=inside)
    row.update(invariance_error=inv["batch_error"], invariance=inv)
  if data.grid is not None and cfg.map_examples:
    row["placement_map"] = placement_map(eval_fn, data)
  return row
