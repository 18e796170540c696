"""trainer/'s layout: its modules import each other without a cycle, and storage stays cheap."""

import os
import subprocess
import sys

from conftest import REPO
from import_graph import assert_no_cycle, package_graph

PACKAGE = os.path.join(REPO, "trainer")
# Modules the storage interface sits on; google libraries load lazily inside them.
STORAGE_BACKENDS = ("gcs", "gcs_publish", "versions", "lockstore")


def _graph() -> dict[str, set[str]]:
  return package_graph(PACKAGE, "trainer")


def test_trainer_modules_import_each_other_without_a_cycle():
  assert_no_cycle(_graph())


def test_storage_backends_do_not_import_the_storage_interface():
  graph = _graph()
  assert "gcs" in graph["storage"]
  for backend in STORAGE_BACKENDS:
    assert "storage" not in graph[backend], backend


def test_gcs_modules_load_no_google_library_at_import():
  """The google libraries load on first GCS use: a local-only run never pays for them.

  The bare `google.cloud` namespace does not count: google-cloud-aiplatform's
  *-nspkg.pth (the test extra) creates it in every interpreter at start-up.
  """
  code = ("import sys\n"
          "from trainer import gcs, gcs_publish, lockstore, versions\n"
          "print(sorted(m for m in sys.modules if m.startswith('google.cloud.')))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "[]"
