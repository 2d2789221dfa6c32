"""The workdir contract shared by every study: refuse rather than overwrite, reuse finished rows."""
import json

import pytest

from experiments import study


def test_workdir_refuses_what_it_did_not_make(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(study.FlagError, match="--workdir=.*is a file"):
    study.Workdir(str(a_file), "orbit", {"steps": 1})
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "results.json").write_text("{}")
  with pytest.raises(study.FlagError, match="no flags.json"):
    study.Workdir(str(foreign), "orbit", {"steps": 1})
  assert (foreign / "results.json").read_text() == "{}"


def test_workdir_refuses_other_flags_and_other_studies(tmp_path):
  path = str(tmp_path / "w")
  study.Workdir(path, "orbit", {"steps": 1})
  study.Workdir(path, "orbit", {"steps": 1})                   # same flags: fine
  with pytest.raises(study.FlagError, match=r"different flags \(steps\)"):
    study.Workdir(path, "orbit", {"steps": 2})
  with pytest.raises(study.FlagError, match=r"different flags \(study\)"):
    study.Workdir(path, "contrastive", {"steps": 1})
  assert json.loads((tmp_path / "w" / "flags.json").read_text()) == {"steps": 1, "study": "orbit"}


def test_rows_are_computed_once_and_written_atomically(tmp_path):
  w = study.Workdir(str(tmp_path / "w"), "orbit", {})
  calls = []
  row = lambda: calls.append(1) or {"acc": 0.5}
  assert w.row("mlp_seed0", row) == {"acc": 0.5}
  assert w.row("mlp_seed0", row) == {"acc": 0.5} and len(calls) == 1

  def broken():
    raise RuntimeError("killed")
  with pytest.raises(RuntimeError):
    w.row("cnn_seed0", broken)
  assert sorted(p.name for p in (tmp_path / "w" / "rows").iterdir()) == ["mlp_seed0.json"]
