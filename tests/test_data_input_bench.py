"""The input bench part runs (tiny) and its headroom compares against the train suite's rows."""
import numpy as np
import pytest

pytest.importorskip("grain")
from experiments.benchmarks import input as input_bench  # noqa: E402


def test_measure_and_headroom():
  arrays = {"images": np.zeros((10, 4, 4, 1), np.float32), "labels": np.zeros(10, np.int32)}
  row = input_bench.measure(arrays, 4, steps=3, repeats=1)
  assert row["batch"] == 4 and row["steps"] == 3 and row["examples_per_s"] > 0
  result = {"rows": {"orbit": {**row, "examples_per_s": 2000.0},
                     "contrastive": {**row, "examples_per_s": 500.0}}}
  train = {"rows": [
      {"model": "orbit/cnn_gap", "per_devices": {"1": {"examples_per_s": 100.0}},
       "single_process": {"examples_per_s": 150.0}},
      {"model": "orbit/orbit_full", "per_devices": {"1": {"examples_per_s": 120.0}}},
      {"model": "contrastive/clip", "per_devices": {"1": {"examples_per_s": 100.0},
                                                    "8": {"examples_per_s": 250.0}}}]}
  got = input_bench.headroom(result, train)["studies"]
  assert got["orbit"]["train_examples_per_s"] == 150.0                # the fastest consumer
  assert got["orbit"]["headroom"] == pytest.approx(2000 / 150) and got["orbit"]["met"]
  assert got["contrastive"]["headroom"] == pytest.approx(2.0) and not got["contrastive"]["met"]
  assert input_bench.headroom(result, {"rows": []})["studies"]["orbit"]["met"] is None
