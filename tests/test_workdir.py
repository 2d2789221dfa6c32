"""The workdir contract shared by every study: refuse rather than overwrite, reuse finished rows."""
import json

import pytest

from experiments import config
from experiments import workdir as workdir_lib
from invariance.data import pipeline


def test_workdir_refuses_what_it_did_not_make(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(config.FlagError, match="--workdir=.*is a file"):
    workdir_lib.Workdir(str(a_file), "orbit", {"steps": 1})
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "results.json").write_text("{}")
  with pytest.raises(config.FlagError, match="no flags.json"):
    workdir_lib.Workdir(str(foreign), "orbit", {"steps": 1})
  assert (foreign / "results.json").read_text() == "{}"


def test_workdir_refuses_other_flags_and_other_studies(tmp_path):
  path = str(tmp_path / "w")
  workdir_lib.Workdir(path, "orbit", {"steps": 1})
  workdir_lib.Workdir(path, "orbit", {"steps": 1})                   # same flags: fine
  with pytest.raises(config.FlagError, match=r"different flags \(steps\)"):
    workdir_lib.Workdir(path, "orbit", {"steps": 2})
  with pytest.raises(config.FlagError, match=r"different flags \(study\)"):
    workdir_lib.Workdir(path, "contrastive", {"steps": 1})
  stored = json.loads((tmp_path / "w" / "flags.json").read_text())
  (tmp_path / "w" / "flags.json").write_text(json.dumps({**stored, "batch_order": "numpy"}))
  with pytest.raises(config.FlagError, match=r"different flags \(batch_order\)"):
    workdir_lib.Workdir(path, "orbit", {"steps": 1})     # rows of another batch order: not mixed
  (tmp_path / "w" / "flags.json").write_text(json.dumps(stored))
  assert json.loads((tmp_path / "w" / "flags.json").read_text()) == {
      "steps": 1, "study": "orbit", "batch_order": pipeline.BATCH_ORDER}


def test_rows_are_computed_once_and_written_atomically(tmp_path):
  w = workdir_lib.Workdir(str(tmp_path / "w"), "orbit", {})
  calls = []
  row = lambda: calls.append(1) or {"acc": 0.5}
  assert w.row("mlp_seed0", row) == {"acc": 0.5}
  assert w.row("mlp_seed0", row) == {"acc": 0.5} and len(calls) == 1

  def broken():
    raise RuntimeError("killed")
  with pytest.raises(RuntimeError):
    w.row("cnn_seed0", broken)
  assert sorted(p.name for p in (tmp_path / "w" / "rows").iterdir()) == ["mlp_seed0.json"]


def test_damaged_json_is_one_line_naming_the_file(tmp_path):
  path = tmp_path / "w"
  w = workdir_lib.Workdir(str(path), "orbit", {"steps": 1})
  w.row("mlp_seed0", lambda: {"acc": 0.5})
  (path / "rows" / "mlp_seed0.json").write_text("{not json")
  with pytest.raises(config.FlagError, match=r"mlp_seed0\.json is not valid JSON") as e:
    w.row("mlp_seed0", lambda: {"acc": 0.7})
  assert "\n" not in str(e.value)
  (path / "flags.json").write_text("[1, 2")
  with pytest.raises(config.FlagError, match=r"flags\.json is not valid JSON"):
    workdir_lib.Workdir(str(path), "orbit", {"steps": 1})
  assert (path / "flags.json").read_text() == "[1, 2"          # nothing overwritten


def test_create_false_writes_nothing_until_create(tmp_path):
  path = tmp_path / "w"
  w = workdir_lib.Workdir(str(path), "orbit", {"steps": 1}, create=False)
  assert not path.exists()
  w.create()
  assert json.loads((path / "flags.json").read_text()) == {
      "steps": 1, "study": "orbit", "batch_order": pipeline.BATCH_ORDER}
