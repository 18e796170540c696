"""overlays/jobset and overlays/jobset-kueue with real trainer processes, under JobSet's and Kueue's rules.

Each scenario renders the overlay with the real kustomize and submits its JobSet to
`standins.jobset_controller.JobSetController` (JobSet v0.12.0's rules,
standins/jobset_rules.py), whose child Jobs run under the Job controller stand-in
(standins/job_controller.py) as the real trainer, each pod in its own network
namespace under the host names JobSet gives it (tests/k8s_harness.py). Under
overlays/jobset-kueue a `KueueStandIn` (Kueue v0.19.2's rules, standins/kueue_rules.py)
admits the JobSets against overlays/kueue's ClusterQueue. As in
tests/test_job_scenarios.py the trainings run 4 epochs on small data and only the
back-off delays are scaled.

These need root and iproute2 (network namespaces); under CI=true a skip
fails the run (tests/no_skips_in_ci.py).
"""

import copy
import functools
import os
import signal
import types

import pytest
import yaml

from conftest import REPO, latest_checkpoint
from faults import fired, signal_on_log
from k8s_harness import IndexedJob, PodNetwork, netns_available
from standins import jobset_rules as jsr
from standins import kueue_rules as kr
from standins.jobset_controller import JobSetController, KueueStandIn
from test_job_scenarios import (EPOCHS, JOB_TIMEOUT_S, SCENARIO_FLAGS, SPE, TIME_SCALE,
                                _assert_one_complete_export)
from test_kustomize import JOBSET, JOBSET_KUEUE, KUEUE, _docs, _one, render
from trainer import errors

pytestmark = pytest.mark.skipif(
    not netns_available(), reason="needs root and iproute2 to create network namespaces")

WORKERS = "workers"  # the overlays' one replicatedJob


@functools.lru_cache(maxsize=None)
def _rendered(overlay: str) -> tuple:
  return tuple(_docs(render(REPO, overlay)))


@pytest.fixture
def kueue():
  """Kueue with overlays/kueue's ClusterQueue, ResourceFlavor and LocalQueue."""
  docs = copy.deepcopy(list(_rendered(KUEUE)))
  flavors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ResourceFlavor"}
  namespace = _one(list(_rendered(JOBSET_KUEUE)), "JobSet")["metadata"]["namespace"]
  queue = KueueStandIn(_one(docs, "ClusterQueue"), flavors, _one(docs, "LocalQueue"),
                       {"kubernetes.io/metadata.name": namespace})  # the label every namespace has
  yield queue
  queue.stop()


@pytest.fixture
def jobsets(tfds_dir, tmp_path):
  """Submits a rendered overlay's JobSet (with local bucket paths) to the JobSet stand-in."""
  settings = {"JOB_DIR": str(tmp_path / "job"), "DATA_DIR": tfds_dir,
              "PUBLISH_DIR": str(tmp_path / "models")}
  controllers, networks = [], []
  checkpoint_at_start = {}  # pod name -> the newest checkpoint in JOB_DIR when it was created

  def submit(overlay, name=None, kueue=None, extra_args=(), **overrides):
    """`kubectl apply -k overlay`: a new JobSet (named `name` if given); returns its controller.

    Its pods get SCENARIO_FLAGS after the manifest's args, then `extra_args`;
    `overrides` replace ConfigMap values. With `kueue`, Kueue's webhook sees it first.
    """
    docs = copy.deepcopy(list(_rendered(overlay)))
    jobset = _one(docs, "JobSet")
    if name:
      jobset["metadata"]["name"] = name
    (env,) = [d for d in docs if d["kind"] == "ConfigMap" and "JOB_DIR" in d.get("data", {})]
    (rjob,) = jsr.validate(jobset)["spec"]["replicatedJobs"]
    assert rjob["name"] == WORKERS and rjob["replicas"] == 1  # one child Job: one PodNetwork
    hosts = jsr.pod_host_names(jobset, WORKERS, 0)
    network = PodNetwork([[host, host.split(".")[0]] for host in hosts])
    networks.append(network)
    values = {**settings, **overrides}

    def launcher(child_job):
      job = IndexedJob(None, values, text=yaml.safe_dump_all([env, child_job]))
      assert [job.hostnames(i)[0] for i in range(job.completions)] == hosts
      launch = job.launcher(network, str(tmp_path / jobset["metadata"]["name"]),
                            [*SCENARIO_FLAGS, *extra_args])

      def launch_and_record(pod):
        checkpoints = os.path.join(values["JOB_DIR"], "checkpoints")
        checkpoint_at_start[pod.name] = latest_checkpoint(values["JOB_DIR"]) if os.path.isdir(checkpoints) else None
        return launch(pod)
      return launch_and_record

    controller = JobSetController(jobset, launcher, time_scale=TIME_SCALE)
    controllers.append(controller)
    if kueue:
      kueue.submit(controller)
    else:
      controller.start()
    return controller

  yield types.SimpleNamespace(submit=submit, settings=settings, checkpoint_at_start=checkpoint_at_start)
  for controller in controllers:
    controller.stop()
  for network in networks:
    network.close()


def _pod(jobset, index, timeout=300):
  """The process of `index`'s live pod in the JobSet's newest running child Job, once it exists."""
  def live():
    running = [j for j in jobset.jobs if j.controller]
    return bool(running) and running[-1].controller.pod(index) is not None
  jobset.wait_for(live, timeout)
  return [j for j in jobset.jobs if j.controller][-1].controller.pod(index)


def _outcomes(job, index):
  return [(p.exit_code, p.action) for p in job.controller.pods(index)]


def _conditions(status):
  return [(c["type"], c["status"], c["reason"]) for c in status["conditions"]]


# ------------------------------------------------------------------ faults


def test_bad_input_fails_the_jobset_at_once_without_a_restart(jobsets, tmp_path):
  """overlays/jobset: a missing data dir is exit 2, the child Job's FailJob rule, and the
  JobSet's BadInput rule (FailJobSet): Failed, no restart, nothing trained."""
  jobset = jobsets.submit(JOBSET, DATA_DIR=str(tmp_path / "no-such-dir"))
  assert jobset.wait(300) == "Failed", jobset.describe()
  assert ("Failed", "True", "FailJobSetFailurePolicyAction") in _conditions(jobset.status)
  assert jobset.status.get("restarts", 0) == 0
  (job,) = jobset.jobs  # never recreated
  assert [(c["type"], c["reason"]) for c in job.controller.status["conditions"]] == [
      ("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")]
  assert (errors.EXIT_USAGE, "FailJob") in [(p.exit_code, p.action) for p in job.pods()]
  assert len(job.pods()) == 2  # no pod was replaced
  assert not os.path.exists(os.path.join(jobsets.settings["JOB_DIR"], "checkpoints"))
