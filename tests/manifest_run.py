"""A pytest plugin: one run of k8s/job.yaml as written, trained to the end, for every test that needs one.

The run is the manifest's own pods (tests/k8s_harness.py: its command,
environment and DNS names, each pod in its own network namespace) under the
Job controller's rules (tests/standins/job_controller.py), with only the
ConfigMap's bucket paths pointed at local folders, and no extra flags.
Training it to the end costs two pods several seconds of both CPU cores; the
tests that start from a finished job (test_job_scenarios' "trains as
written", rerun and chief-alone scenarios, in one module so that one
pytest-xdist worker runs them all: pytest.ini) share it.

Those tests may change JOB_DIR and PUBLISH_DIR: `finished_manifest_job` puts
both back, from a copy taken when the run ended, before each test, at the same
paths (metrics.json and the checkpoint state record absolute ones).
"""

from __future__ import annotations

import os
import shutil
import types

import pytest

from conftest import REPO

MANIFEST = os.path.join(REPO, "k8s", "job.yaml")
# The Job controller's back-off delays, scaled as in test_job_scenarios (10 s -> 0.1 s).
TIME_SCALE = 0.01
DIRS = ("JOB_DIR", "PUBLISH_DIR")


@pytest.fixture(scope="session")
def _manifest_run(tfds_dir, tmp_path_factory):
  # pylint: disable=import-outside-toplevel
  from k8s_harness import IndexedJob, PodNetwork
  from standins.job_controller import JobController
  root = tmp_path_factory.mktemp("manifest_run")
  settings = {"JOB_DIR": str(root / "job"), "DATA_DIR": tfds_dir, "PUBLISH_DIR": str(root / "models")}
  job = IndexedJob(MANIFEST, settings)
  network = PodNetwork([job.hostnames(i) for i in range(job.completions)])
  controller = JobController(job.job, job.launcher(network, str(root)), time_scale=TIME_SCALE,
                             uid=job.uid)
  try:
    controller.start()
    outcome = controller.wait(600)
  finally:
    controller.stop()
    network.close()
  assert outcome == "Complete", controller.describe()
  snapshot = root / "snapshot"
  for name in DIRS:
    shutil.copytree(settings[name], snapshot / name, symlinks=True)
  return types.SimpleNamespace(job=job, controller=controller, settings=settings, snapshot=snapshot)


@pytest.fixture
def finished_manifest_job(_manifest_run):
  """k8s/job.yaml as written, run to Complete by the Job controller (each index: one pod, exit 0).

  Attributes: `job` (its IndexedJob), `controller` (pods, outcomes, logs),
  `settings` (the ConfigMap values: JOB_DIR, DATA_DIR, PUBLISH_DIR), with
  JOB_DIR and PUBLISH_DIR as the run left them.
  """
  for name in DIRS:
    shutil.rmtree(_manifest_run.settings[name], ignore_errors=True)
    shutil.copytree(_manifest_run.snapshot / name, _manifest_run.settings[name], symlinks=True)
  return _manifest_run
