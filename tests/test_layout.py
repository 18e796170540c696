"""trainer/'s layout: its modules import each other without a cycle, and storage stays cheap."""

import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, "trainer")
# Modules the storage interface sits on; google libraries load lazily inside them.
STORAGE_BACKENDS = ("gcs", "gcs_publish", "versions", "lockstore")


def _trainer_imports(path: str) -> set[str]:
  """The trainer modules that `path` imports anywhere (top level or inside functions).

  A function-level import still forms a cycle in the design, even if Python
  tolerates it at run time, so every import counts.
  """
  names = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.ImportFrom) and node.module == "trainer":
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer."):
      names.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("trainer."))
  return names


def _graph() -> dict[str, set[str]]:
  modules = {name[:-3] for name in os.listdir(PACKAGE)
             if name.endswith(".py") and not name.startswith("__")}
  return {m: _trainer_imports(os.path.join(PACKAGE, m + ".py")) & modules for m in modules}


def test_trainer_modules_import_each_other_without_a_cycle():
  graph = _graph()
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


def test_storage_backends_do_not_import_the_storage_interface():
  graph = _graph()
  assert "gcs" in graph["storage"]
  for backend in STORAGE_BACKENDS:
    assert "storage" not in graph[backend], backend


def test_gcs_modules_load_no_google_library_at_import():
  """The google libraries load on first GCS use: a local-only run never pays for them."""
  code = ("import sys\n"
          "from trainer import gcs, gcs_publish, lockstore, versions\n"
          "print(sorted(m for m in sys.modules if m.startswith('google.cloud')))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "[]"
