"""Which of a package's modules import which, read with ast, and a check that no import cycle exists."""

from __future__ import annotations

import ast
import os


def _imports(path: str, package: str) -> set[str]:
  """Names of `package`'s submodules that `path` imports, anywhere in the file.

  A function-level import still forms a cycle in the design, even if Python
  tolerates it at run time, so every import counts. Names imported from the
  package itself (`from trainer import storage`) count too.
  """
  names = set()
  prefix = package + "."
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.ImportFrom) and node.module == package:
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
      names.add(node.module[len(prefix):].split(".")[0])
    elif isinstance(node, ast.Import):
      names.update(a.name[len(prefix):].split(".")[0] for a in node.names
                   if a.name.startswith(prefix))
  return names


def package_graph(directory: str, package: str) -> dict[str, set[str]]:
  """{module: the package's modules it imports} for every module file in `directory`."""
  modules = {name[:-3] for name in os.listdir(directory)
             if name.endswith(".py") and not name.startswith("__")}
  return {m: _imports(os.path.join(directory, m + ".py"), package) & modules for m in modules}


def assert_no_cycle(graph: dict[str, set[str]]) -> None:
  """Fails naming the first import cycle found (a depth-first walk), if there is one."""
  done, visiting = set(), []

  def visit(module):
    assert module not in visiting, f"import cycle: {' -> '.join(visiting + [module])}"
    if module in done:
      return
    visiting.append(module)
    for imported in sorted(graph[module]):
      visit(imported)
    visiting.pop()
    done.add(module)

  for module in sorted(graph):
    visit(module)
