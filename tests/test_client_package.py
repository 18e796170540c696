"""serving/client/'s layout: REST needs no TensorFlow, and the modules import without a cycle."""

import os
import subprocess
import sys

from conftest import REPO
from import_graph import assert_no_cycle, package_graph

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


def test_modules_import_each_other_without_a_cycle():
  graph = package_graph(PACKAGE, "serving.client")
  assert_no_cycle(graph)
  assert "grpc" not in graph  # a module named grpc.py would shadow grpcio inside the package
