"""Which of a package's modules import which, read with ast, and a check that no import cycle exists.

Modules are named relative to the package, subpackages with dots: `storage.api`,
and a subpackage's `__init__` by the subpackage's name (`models`). The
package's own `__init__` is not a node.
"""

from __future__ import annotations

import ast
import os


def _module_names(directory: str) -> set[str]:
  names = set()
  for dirpath, dirnames, filenames in os.walk(directory):
    dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
    rel = os.path.relpath(dirpath, directory)
    prefix = "" if rel == "." else rel.replace(os.sep, ".") + "."
    for filename in filenames:
      if not filename.endswith(".py"):
        continue
      if filename == "__init__.py":
        if prefix:
          names.add(prefix[:-1])
      else:
        names.add(prefix + filename[:-3])
  return names


def _path(directory: str, module: str, modules: set[str]) -> str:
  parts = module.split(".")
  if any(m.startswith(module + ".") for m in modules):  # a subpackage: its __init__
    return os.path.join(directory, *parts, "__init__.py")
  return os.path.join(directory, *parts) + ".py"


def _imports(path: str, package: str, modules: set[str]) -> set[str]:
  """The package's modules that `path` imports, anywhere in the file.

  A function-level import still forms a cycle in the design, even if Python
  tolerates it at run time, so every import counts. `from trainer.storage
  import api` imports `storage.api`; `from trainer import models` imports
  `models`; a name that is not a module (`from trainer.config import
  TrainConfig`) imports the module it comes from.
  """
  names = set()
  prefix = package + "."

  def add(dotted: str) -> None:
    if dotted in modules:
      names.add(dotted)

  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == package or node.module.startswith(prefix)):
      base = node.module[len(prefix):] if node.module != package else ""
      for alias in node.names:
        full = f"{base}.{alias.name}" if base else alias.name
        if full in modules:
          add(full)
        else:
          add(base)
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith(prefix):
          add(a.name[len(prefix):])
  return names


def package_graph(directory: str, package: str) -> dict[str, set[str]]:
  """{module: the package's modules it imports} for every module under `directory`."""
  modules = _module_names(directory)
  return {m: _imports(_path(directory, m, modules), package, modules) - {m} for m in modules}


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
