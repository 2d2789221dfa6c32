"""README's API tour runs as written (a stale example is a failing test)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_tour_runs(capsys):
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  section = text[text.index("## API tour"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  exec(compile(code, "README.md (API tour)", "exec"), {})
  printed = capsys.readouterr().out.split()
  assert float(printed[0]) < 1e-4 and float(printed[1]) == 0.0     # the audit line's output
