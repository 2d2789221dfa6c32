"""The package structure: the library never imports the command lines, no module imports a
study's main, and the module import graph has no cycle."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules() -> dict[str, str]:
  out = {}
  for package in ("invariance", "experiments"):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
          out[mod] = path
  return out


def _imports(path: str, modules: dict) -> set[str]:
  """Project modules imported at module level or inside functions (both count for a cycle)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
               for a in node.names]
    found |= {n for n in names if n in modules}
  return found


def _graph():
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _cycle(graph) -> list:
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        return stack[stack.index(n):] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    stack.pop()
    state[m] = "done"
    return []
  for m in sorted(graph):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return []


def test_no_import_cycle_and_layers_point_down():
  graph = _graph()
  assert not _cycle(graph), _cycle(graph)
  upward = {(m, n) for m, deps in graph.items() if m.startswith("invariance")
            for n in deps if n.startswith("experiments")}
  assert not upward
  mains = {m for m, p in _modules().items() if m != "experiments.cli"
           and "cli.run(" in open(p).read() and "__main__" in open(p).read()}
  assert {"experiments.orbit", "experiments.contrastive", "experiments.recover"} <= mains
  assert not {(m, n) for m, deps in graph.items() for n in deps & mains}


def test_the_cycle_finder_finds_a_cycle():
  """Control: the same search reports a planted cycle."""
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) == []
