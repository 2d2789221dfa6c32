"""The MLP probe decodes what a linear probe cannot (XOR), and stays at chance on noise."""
import numpy as np
import pytest

from invariance import mlp_probe
from invariance import probes


def _xor(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 4))
  return x, {"xor": (x[:, 0] * x[:, 1] > 0).astype(np.int32),
             "noise": rng.integers(0, 2, n).astype(np.int32)}


def test_mlp_decodes_xor_where_ridge_cannot():
  (x_tr, a_tr), (x_te, a_te) = _xor(600, 0), _xor(600, 1)
  got = mlp_probe.mlp_probes(x_tr, a_tr, x_te, a_te)
  ridge = probes.ridge_probes(x_tr, a_tr, x_te, a_te)
  assert got["xor"][0] > 0.9 and ridge["xor"][0] < 0.6          # ridge is the control
  assert abs(got["noise"][0] - 0.5) < 0.08
  assert got["xor"][1] in mlp_probe.ALPHAS
  assert got == mlp_probe.mlp_probes(x_tr, a_tr, x_te, a_te)    # deterministic


def test_bad_inputs_are_refused():
  (x, a) = _xor(40, 0)
  with pytest.raises(ValueError, match="feature dimension"):
    mlp_probe.mlp_probes(x, a, x[:, :2], a)
  with pytest.raises(ValueError, match="attrs"):
    mlp_probe.mlp_probes(x, a, x, {"xor": a["xor"]})
  with pytest.raises(ValueError, match="folds"):
    mlp_probe.mlp_probes(x, a, x, a, folds=1)
