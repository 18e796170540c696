"""trainer/'s layout: packages by concern, imports only downward, no cycle, one reader of the environment."""

import ast
import os
import re
import subprocess
import sys

from conftest import REPO
from import_graph import assert_no_cycle, package_graph
from trainer import environment

PACKAGE = os.path.join(REPO, "trainer")
# What each part of trainer/ may import besides itself (docs/architecture.md).
# A top-level module is its own part; subpackages are one part each.
MAY_IMPORT = {
    "errors": set(),
    "environment": set(),
    "models": set(),
    "config": {"errors"},
    "presets": {"config", "errors"},
    "storage": {"config", "errors", "environment"},
    "cluster": {"config", "errors", "environment"},
    "data": {"storage", "config", "errors"},
    "export": {"models", "storage", "data", "config", "errors"},
    "telemetry": {"storage", "data", "config", "errors"},
    "training": {"telemetry", "storage", "data", "cluster", "models", "export", "config",
                 "errors", "environment"},
}
ENTRIES = ("task", "prepare", "synthetic")  # thin tool entries: may import anything
# The storage interface and the back ends below it; google libraries load lazily inside them.
STORAGE_BACKENDS = ("storage.local", "storage.gcs", "storage.gcs_publish", "storage.versions",
                    "storage.lockstore")


def _graph() -> dict[str, set[str]]:
  return package_graph(PACKAGE, "trainer")


def _part(module: str) -> str:
  return module.split(".")[0]


def test_trainer_modules_import_each_other_without_a_cycle():
  assert_no_cycle(_graph())


def test_every_part_imports_only_what_its_layer_allows():
  graph = _graph()
  parts = {_part(m) for m in graph}
  assert parts == set(MAY_IMPORT) | set(ENTRIES), "a new part needs a line in MAY_IMPORT"
  for module, imported in graph.items():
    if _part(module) in ENTRIES:
      continue
    for other in imported:
      if _part(other) != _part(module):
        assert _part(other) in MAY_IMPORT[_part(module)], f"{module} imports {other}"


def test_storage_backends_do_not_import_the_storage_interface():
  graph = _graph()
  assert {"storage.local", "storage.gcs", "storage.gcs_publish"} <= graph["storage.api"]
  for backend in STORAGE_BACKENDS:
    assert "storage.api" not in graph[backend], backend


def test_every_package_init_says_what_it_holds_and_may_import():
  for name in sorted(os.listdir(PACKAGE)):
    init = os.path.join(PACKAGE, name, "__init__.py")
    if os.path.isfile(init):
      doc = ast.get_docstring(ast.parse(open(init, encoding="utf-8").read())) or ""
      modules = [f[:-3] for f in os.listdir(os.path.dirname(init))
                 if f.endswith(".py") and f != "__init__.py"]
      for module in modules:
        assert re.search(rf"^\s+{module}\b", doc, re.M), f"trainer/{name}: {module} not listed"
      assert "import" in doc, f"trainer/{name}/__init__.py does not say what it may import"


def test_only_the_environment_module_reads_the_environment():
  for dirpath, _, filenames in os.walk(PACKAGE):
    for filename in filenames:
      path = os.path.join(dirpath, filename)
      if not filename.endswith(".py") or path == os.path.join(PACKAGE, "environment.py"):
        continue
      text = open(path, encoding="utf-8").read()
      assert not re.search(r"\bos\.(environ|getenv|putenv)\b", text), path


def test_the_documented_environment_variables_are_exactly_the_ones_read():
  doc = open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8").read()
  table = doc[doc.index("## Environment variables"):]
  table = table[:table.index("\n## ")] if "\n## " in table else table
  documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
  assert documented == set(environment.NAMES)


def test_environment_reads_only_the_honoured_variables():
  env = environment.read({"TF_CONFIG": "{}", "HOME": "/root", "TRAINER_JOB_UID": "u-1"})
  assert dict(env) == {"TF_CONFIG": "{}", "TRAINER_JOB_UID": "u-1"}
  assert env.job_uid == "u-1" and env.job_name == "" and env.worker_index is None


def _words_printed_by(code: str) -> list[str]:
  """What `code` prints, split into words, run in a fresh interpreter (nothing imported yet)."""
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.split()


def test_storage_modules_load_no_google_library_and_no_tensorflow_at_import():
  """The google libraries load on first GCS use: a local-only run never pays for them. And
  TensorFlow loads on first use of tf.io.gfile (storage.api's readers): a process that only
  locks a job dir or publishes a copy never pays for it.

  The bare `google.cloud` namespace does not count: google-cloud-aiplatform's
  *-nspkg.pth (the test extra) creates it in every interpreter at start-up.
  """
  code = ("import sys\n"
          "from trainer.storage import api, gcs, gcs_publish, joblock, lockstore, versions\n"
          "print(sorted(m for m in sys.modules if m.startswith('google.cloud.')))\n"
          "print('tensorflow' in sys.modules)\n")
  assert _words_printed_by(code) == ["[]", "False"]


def test_the_cluster_is_read_and_checked_without_loading_tensorflow():
  """trainer.cluster.resolver parses TF_CONFIG, CLUSTER_SPEC and a pod's identity; only
  trainer.cluster.distribution, which starts the strategy, needs TensorFlow."""
  code = ("import json, sys\n"
          "from trainer.cluster import resolver\n"
          "spec = {'cluster': {'worker': ['w-0.svc:2222', 'w-1.svc:2222']},\n"
          "        'task': {'type': 'worker', 'index': 1}}\n"
          "cluster = resolver.cluster_from_env({'TF_CONFIG': json.dumps(spec)})\n"
          "print(cluster.num_workers, cluster.worker_index, resolver.chief_address(cluster))\n"
          "print('tensorflow' in sys.modules)\n")
  assert _words_printed_by(code) == ["2", "1", "w-0.svc:2222", "False"]
