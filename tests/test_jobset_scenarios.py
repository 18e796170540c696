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


def test_an_eviction_stays_in_the_child_job_a_crash_restarts_the_jobset_and_a_second_jobset_waits(
    jobsets, kueue, tmp_path, monkeypatch):
  """overlays/jobset-kueue, one run for three promises of docs/kubernetes.md:

  b. worker 1 is evicted mid-epoch 2 (DisruptionTarget, SIGTERM, 143): the child Job's
     podFailurePolicy ignores it and replaces the pod; the JobSet does not restart.
  a. worker 1 is then OOM-killed in epoch 3 (SIGKILL, 137): counted, over the child Job's
     backoffLimit 0, so the Job fails (BackoffLimitExceeded, after the chief's pod is
     deleted); the JobSet's Crash rule restarts it (restarts 1 of maxRestarts 3): the
     old Job is deleted in the foreground and recreated, with restart-attempt 1, only
     once its pods are gone; attempt 1 resumes from the newest checkpoint and completes.
  c. a second JobSet on the same LocalQueue (the ClusterQueue's quota fits one
     training) is created meanwhile: held suspended with no pod at all until the first
     finishes, then admitted; it is a rerun of the same training (the same JOB_DIR),
     so it completes at once and leaves the first's export untouched.
  """
  fault = str(tmp_path / "fault")
  monkeypatch.setenv("PYTHONPATH", signal_on_log(
      fault, f"epoch 3/{EPOCHS} step ", signal.SIGKILL, who=1, in_call=True)["PYTHONPATH"])
  first = jobsets.submit(JOBSET_KUEUE, kueue=kueue)
  second = jobsets.submit(JOBSET_KUEUE, name="cnn-trainer-rerun", kueue=kueue)
  _pod(first, 1).wait_for(f"epoch 2/{EPOCHS} step ", timeout=300)
  first.child(WORKERS, 0).controller.evict(1)
  assert first.wait(JOB_TIMEOUT_S) == "Completed", first.describe()
  assert fired(fault)

  # b. The eviction: replaced inside the child Job of attempt 0, nothing counted.
  old = first.child(WORKERS, 0, attempt=0)
  evicted, killed = old.controller.pods(1)
  assert (evicted.exit_code, evicted.action) == (errors.EXIT_PREEMPTED, "Ignore")
  assert [c["type"] for c in evicted.conditions] == ["DisruptionTarget"]
  assert (killed.exit_code, killed.action) == (137, "Count")
  assert killed.labels[jsr.RESTARTS_KEY] == "0"  # the replacement was attempt 0's: no JobSet restart
  assert all(s.get("restarts", 0) == 0 for t, s in first.statuses if t < killed.finished_at)
  # The chief stopped at the same step (143, no DisruptionTarget of its own) and was replaced too.
  chief = old.controller.pods(0)[0]
  assert (chief.exit_code, chief.action, chief.conditions) == (errors.EXIT_PREEMPTED, "Ignore", [])

  # a. The crash: the child Job failed, the JobSet restarted once, by its Crash rule.
  assert old.controller.counted == [0, 1]
  assert [(c["type"], c["reason"]) for c in old.controller.status["conditions"]] == [
      ("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
  assert all(p.action != "Succeeded" for p in old.controller.pods(0))  # the chief's pod was stopped too
  restarting = [s for _, s in first.statuses if any(c["type"] == "Restarting" for c in s["conditions"])]
  assert _conditions(restarting[0])[-1] == ("Restarting", "True", "FailurePolicy_Crash")
  assert (first.status["restarts"], first.status["restartsCountTowardsMax"]) == (1, 1)
  assert _conditions(first.status) == [("Completed", "True", "AllJobsCompleted"),
                                       ("Restarting", "False", "JobSetCompleted")]
  assert [(j.name, j.attempt) for j in first.jobs] == [("cnn-trainer-workers-0", 0), ("cnn-trainer-workers-0", 1)]
  new = first.child(WORKERS, 0, attempt=1)
  assert old.gone_at <= new.created_at  # foreground deletion, then recreation
  assert max(p.finished_at for p in old.pods()) <= min(p.started_at for p in new.pods())  # no overlap
  assert _outcomes(new, 0) == _outcomes(new, 1) == [(0, "Succeeded")]
  for pod in old.pods() + new.pods():
    assert pod.labels[jsr.JOBSET_UID_KEY] == first.uid  # TRAINER_JOB_UID: the same in both attempts
    assert pod.labels[jsr.RESTARTS_KEY] == str(0 if pod in old.pods() else 1)
  metrics = _assert_one_complete_export(jobsets.settings)
  resumed = metrics["resumed_from"]
  # Attempt 1 resumed from the newest checkpoint there was when its chief started, one no
  # older than epoch 2's end: the crash lost at most the steps of epoch 3 before it.
  start = jobsets.checkpoint_at_start[new.controller.pods(0)[0].name]
  assert resumed["checkpoint"].endswith(start) and resumed["global_step"] >= 2 * SPE
  assert metrics["steps_trained"] == EPOCHS * SPE - resumed["global_step"]

  # c. The second JobSet: queued while the first held the quota, no pod before it finished.
  assert second.wait(JOB_TIMEOUT_S) == "Completed", second.describe()
  held, waited = kueue.workload(first), kueue.workload(second)
  assert waited["waited"] and waited["waited"][0].startswith(kr.WAITING_FOR_QUOTA)
  assert waited["admitted_at"] >= held["finished_at"]
  (job,) = second.jobs
  assert job.created_at < held["finished_at"] <= job.resumed_at  # created suspended by JobSet, resumed
  assert min(p.started_at for p in second.pods()) >= held["finished_at"]
  assert second.status.get("restarts", 0) == 0 and _outcomes(job, 0) == _outcomes(job, 1) == [(0, "Succeeded")]
  assert _assert_one_complete_export(jobsets.settings) == metrics  # the rerun changed nothing
  second.wait_for(lambda: waited["finished_at"] is not None, 5)  # Kueue's next pass
  assert all(v == 0 for v in kueue.usage.values())  # both finished: the quota is free again


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
