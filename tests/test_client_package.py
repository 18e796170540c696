"""serving/client/'s layout: REST needs no TensorFlow, and the modules import without a cycle."""

import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, "serving", "client")


def test_rest_client_imports_neither_tensorflow_nor_grpc():
  """REST users install only requests: the package and a REST client must not need more."""
  code = ("import sys\n"
          "from serving.client import PredictClient, parse_predict_response, main\n"
          "PredictClient.rest('http://127.0.0.1:1', 'cifar10').close()\n"
          "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'grpc', 'tensorflow_serving'))\n"
          "print(heavy)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "[]"


def _sibling_imports(path: str) -> set[str]:
  """The serving.client modules that `path` imports at module level."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  names = set()
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("serving.client."):
      names.add(node.module.rsplit(".", 1)[1])
  return names


def test_modules_import_each_other_without_a_cycle():
  graph = {name[:-3]: _sibling_imports(os.path.join(PACKAGE, name))
           for name in os.listdir(PACKAGE) if name.endswith(".py") and not name.startswith("__")}
  done, visiting = set(), []

  def visit(module):
    assert module not in visiting, f"import cycle: {' -> '.join(visiting + [module])}"
    if module in done:
      return
    visiting.append(module)
    for imported in graph[module]:
      visit(imported)
    visiting.pop()
    done.add(module)

  for module in graph:
    visit(module)
  assert "grpc" not in graph  # a module named grpc.py would shadow grpcio inside the package
