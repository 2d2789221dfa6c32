"""docs/studies/*.md are exactly what the report code writes from docs/results (no drift)."""
import os

import pytest

from experiments import docs


@pytest.mark.parametrize("name", sorted(docs.STUDIES))
def test_study_doc_matches_saved_results(name):
  path = os.path.join(docs.STUDIES_DIR, f"{name}.md")
  assert os.path.exists(path), f"{path} missing: run python -m experiments.docs"
  with open(path) as f:
    assert f.read() == docs.render(name), f"{path} is stale: run python -m experiments.docs"


def test_render_uses_the_numbers(tmp_path, monkeypatch):
  """A changed number in results.json changes the write-up (the check can fail)."""
  import json
  import shutil
  name = "pretrained"           # its page reads measured accuracies only (no selection by value)
  _, results = docs.STUDIES[name]
  for r in results:
    shutil.copytree(os.path.join(docs.RESULTS, r), tmp_path / r)
  before = docs.render(name, str(tmp_path))
  first = tmp_path / results[0] / "results.json"
  data = json.loads(first.read_text())

  def bump(obj):
    if isinstance(obj, dict):
      return {k: bump(v) for k, v in obj.items()}
    if isinstance(obj, list):
      return [bump(v) for v in obj]
    if isinstance(obj, float):
      return obj + 0.123
    return obj
  first.write_text(json.dumps(bump(data)))
  assert docs.render(name, str(tmp_path)) != before
