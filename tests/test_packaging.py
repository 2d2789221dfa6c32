"""The package as a user installs it: pyproject.toml's packages and package data, requirements.txt
pins every package imported directly, flagfiles found from any directory, and conftest's XLA level."""
import ast
import glob
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
import tomllib

import pytest

from experiments import cli as study_cli
from experiments import flagfiles
from experiments.orbit_config import OrbitConfig
from tests import cli

ROOT = cli.ROOT
# Imported only by code that runs in the oracle's separate environment (README, DESIGN.md).
SEPARATE_ENV = {"torch", "open_clip", "timm"}


def _pyproject():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _requirement_names(path="requirements.txt"):
  names = set()
  with open(os.path.join(ROOT, path)) as f:
    for line in f:
      line = line.split("#")[0].strip()
      if line:
        names.add(_normal(re.split(r"[\[=<>~!; ]", line)[0]))
  return names


def _normal(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports():
  """Top-level module -> files, for every absolute import in invariance/, experiments/, tests/."""
  local = {"invariance", "experiments", "tests", "__future__"}
  found = {}
  for top in ("invariance", "experiments", "tests"):
    for path in glob.glob(os.path.join(ROOT, top, "**", "*.py"), recursive=True):
      with open(path) as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          names = [node.module]
        else:
          continue
        for name in names:
          module = name.split(".")[0]
          if module not in local and module not in sys.stdlib_module_names:
            found.setdefault(module, set()).add(os.path.relpath(path, ROOT))
  return found


def test_every_direct_import_is_pinned():
  pinned = _requirement_names()
  distributions = importlib.metadata.packages_distributions()
  imports = _third_party_imports()
  assert {"jax", "PIL", "scipy", "etils"} <= set(imports)      # the scan sees what it must
  missing = {}
  for module, files in imports.items():
    if module in SEPARATE_ENV:
      continue
    dists = {_normal(d) for d in distributions.get(module, ())}
    if not dists & pinned:
      missing[module] = (sorted(dists), sorted(files))
  assert not missing, f"imported directly but not pinned in requirements.txt: {missing}"


def test_requirements_are_exact_pins_and_pyproject_names_only_pinned_packages():
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    lines = [line.split("#")[0].strip() for line in f]
  assert all("==" in line for line in lines if line), "requirements.txt is the pinned set"
  project = _pyproject()["project"]
  declared = project["dependencies"] + project["optional-dependencies"]["test"]
  assert all(not re.search("[=<>~]", d) for d in declared), "pins live in requirements.txt only"
  assert {_normal(re.split(r"\[", d)[0]) for d in declared} <= _requirement_names()


def test_pyproject_ships_every_package_and_flagfile():
  setuptools = _pyproject()["tool"]["setuptools"]
  patterns = setuptools["packages"]["find"]["include"]
  packages = [os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
              for top in ("invariance", "experiments")
              for p in glob.glob(os.path.join(ROOT, top, "**", "__init__.py"), recursive=True)]
  assert "experiments.benchmarks" in packages and "invariance.data" in packages
  for package in packages:
    assert any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), package) for p in patterns)
  shipped = {os.path.join(ROOT, "experiments", pattern)
             for pattern in setuptools["package-data"]["experiments"]}
  flagfile_paths = glob.glob(os.path.join(ROOT, "experiments", "configs", "*"))
  assert flagfile_paths and set(flagfile_paths) <= {p for s in shipped for p in glob.glob(s)}


def test_flagfiles_are_found_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  rel = "experiments/configs/orbit_smoke.flags"
  resolved = flagfiles.resolve(["prog", f"--flagfile={rel}", "--seeds=0"])
  assert resolved == ["prog", f"--flagfile={os.path.join(ROOT, rel)}", "--seeds=0"]
  assert cli.flag_error(OrbitConfig, *resolved[1:]) == ""
  assert flagfiles.resolve(["--flagfile", rel])[1] == os.path.join(ROOT, rel)
  # Controls: a file that exists from here wins; absolute and missing paths are left to absl.
  (tmp_path / "experiments" / "configs").mkdir(parents=True)
  (tmp_path / rel).write_text("--seeds=1\n")
  assert flagfiles.resolve([f"--flagfile={rel}"]) == [f"--flagfile={rel}"]
  missing = "experiments/configs/no_such.flags"
  assert flagfiles.resolve([f"--flagfile={missing}", "/abs/x.flags"]) == [
      f"--flagfile={missing}", "/abs/x.flags"]
  assert flagfiles.locate("/abs/x.flags") == "/abs/x.flags"


_HOOKED = "flagfiles" in inspect.getsource(study_cli._parse_flags)


@pytest.mark.skipif(not _HOOKED, reason="experiments/cli.py's _parse_flags does not call "
                    "flagfiles.resolve yet (README commands need the clone as cwd until it does)")
def test_readme_command_runs_from_another_directory(tmp_path):
  """As a user after `pip install -e .`: the study reads README's flagfile path from elsewhere
  (stopped by a bad flag before any work, so nothing is trained or written)."""
  env = dict(cli.env(), PYTHONPATH=ROOT)     # what `pip install -e .` gives, without installing
  proc = subprocess.run([sys.executable, "-m", "experiments.orbit",
                         "--flagfile=experiments/configs/orbit.flags", "--steps=0"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: --steps=0: allowed: an integer")
  assert not os.listdir(tmp_path)


def test_conftest_sets_the_xla_level_unless_asked_for_the_default():
  level0 = "--xla_backend_optimization_level=0" in os.environ.get("XLA_FLAGS", "")
  assert level0 == (os.environ.get("INVARIANCE_XLA_DEFAULT_OPT", "0") != "1")


def test_every_test_file_that_ci_names_exists():
  """.ci/run names the test files of its XLA-default run: a renamed or split file fails here
  rather than at the end of CI (pytest stops on a missing path)."""
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    named = re.findall(r"tests/test_\w+\.py", f.read())
  assert len(named) >= 5, named
  assert [p for p in named if not os.path.isfile(os.path.join(ROOT, p))] == []
