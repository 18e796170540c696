"""The JobSet stand-in over processes (tests/standins/jobset_controller.py), with small scripts as pods.

What the trainer scenarios (tests/test_jobset_scenarios.py) cannot show with one child Job: when a
restart would let the old attempt's pods overlap the new attempt's. JobSet deletes child Jobs in
the foreground (jobset_controller.go, deleteJobs: DeletePropagationForeground), so a Job and its
name stay until its pods are gone and no pod of a name ever overlaps its predecessor; across child
Jobs, `Recreate` recreates each Job as soon as its own predecessor is gone, `BlockingRecreate`
(overlays/jobset's) only once every Job of the old attempt is. And a crash loop, too long for
real trainings, spending maxRestarts.

And Kueue's waitForPodsReady at run time (standins.jobset_controller.KueueStandIn over
overlays/jobset-kueue and overlays/kueue, its configuration given to the stand-in with its timeout
and back-offs scaled): a worker left Pending on a shared cluster gets the workload evicted
(PodsReadyTimeout), the JobSet suspended, its pods deleted uncounted, the quota released and the
workload requeued after the back-off, then admitted again and completed once a GPU frees up; with
none ever free, deactivated after backoffLimitCount requeues.
"""

import copy
import functools
import os
import sys
import time

import pytest

from conftest import REPO
from standins import jobset_rules as jsr
from standins import kueue_rules as kr
from standins.jobset_controller import JobSetController, KueueStandIn
from test_job_controller_rules import exits, traps
from test_kustomize import JOBSET, JOBSET_KUEUE, KUEUE, _docs, _one, render
from workers import Worker


@functools.lru_cache(maxsize=None)
def _jobset() -> dict:
  return _one(_docs(render(REPO, JOBSET)), "JobSet")


def _script(job_index: int, attempt: int, pod_index: int) -> str:
  """Attempt 0: Job 0's pod 0 crashes after 1 s (exit 1, counted); every other pod shuts down on
  SIGTERM, Job 1's taking 2 s to. Attempt 1: every pod succeeds."""
  if attempt > 0:
    return exits(0)
  if (job_index, pod_index) == (0, 0):
    return "import sys, time; time.sleep(1); sys.exit(1)"
  return traps(143, after=2.0 if job_index == 1 else 0.0)


@pytest.mark.parametrize("strategy", ["BlockingRecreate", "Recreate"])
def test_a_restart_never_overlaps_a_pod_with_its_predecessor_and_blockingrecreate_none_at_all(strategy):
  """overlays/jobset with two child Jobs (replicas: 2) and either restartStrategy."""
  jobset = copy.deepcopy(_jobset())
  jobset["spec"]["failurePolicy"]["restartStrategy"] = strategy
  (rjob,) = jobset["spec"]["replicatedJobs"]
  rjob["replicas"] = 2
  rjob["template"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5

  def launcher(child):
    labels = child["metadata"]["labels"]
    job_index, attempt = int(labels[jsr.JOB_INDEX_KEY]), int(labels[jsr.RESTARTS_KEY])
    return lambda pod: Worker(pod.name, [sys.executable, "-c", _script(job_index, attempt, pod.index)],
                              dict(os.environ))

  controller = JobSetController(jobset, launcher, time_scale=0.01)
  controller.start()
  try:
    assert controller.wait(60) == "Completed", controller.describe()
  finally:
    controller.stop()
  assert (controller.status["restarts"], controller.status["restartsCountTowardsMax"]) == (1, 1)
  jobs = {(j.name, j.attempt): j for j in controller.jobs}
  assert sorted(jobs) == [("cnn-trainer-workers-0", 0), ("cnn-trainer-workers-0", 1),
                          ("cnn-trainer-workers-1", 0), ("cnn-trainer-workers-1", 1)]
  old_0, new_0 = jobs["cnn-trainer-workers-0", 0], jobs["cnn-trainer-workers-0", 1]
  old_1, new_1 = jobs["cnn-trainer-workers-1", 0], jobs["cnn-trainer-workers-1", 1]
  # Job 1 of attempt 0 was deleted with its pods running (SIGTERM, no DisruptionTarget) ...
  assert [(p.exit_code, p.action, p.conditions) for p in old_1.pods()] == [(143, "Terminated", [])] * 2
  # ... and no Job was recreated before its own predecessor and that one's pods were gone.
  for old, new in ((old_0, new_0), (old_1, new_1)):
    assert old.gone_at <= new.created_at
    assert max(p.finished_at for p in old.pods()) <= min(p.started_at for p in new.pods())
  last_old_pod = max(p.finished_at for p in old_0.pods() + old_1.pods())
  if strategy == "BlockingRecreate":  # the shipped one: the new attempt waits for every old pod
    assert min(p.started_at for p in new_0.pods() + new_1.pods()) >= last_old_pod
  else:  # Recreate: Job 0's new pods run while Job 1's old ones are still terminating
    assert min(p.started_at for p in new_0.pods()) < last_old_pod


def test_a_crash_loop_spends_max_restarts_then_fails_the_jobset():
  """overlays/jobset as rendered: every attempt's worker 0 crashes (exit 1, counted). Attempts 0-3
  each restart the JobSet (rule Crash, maxRestarts 3); attempt 3's failure fails it, ReachedMaxRestarts."""
  def launcher(child):
    return lambda pod: Worker(pod.name, [sys.executable, "-c", exits(1) if pod.index == 0 else traps(143)],
                              dict(os.environ))

  controller = JobSetController(_jobset(), launcher, time_scale=0.01)
  controller.start()
  try:
    assert controller.wait(60) == "Failed", controller.describe()
  finally:
    controller.stop()
  assert [j.attempt for j in controller.jobs] == [0, 1, 2, 3]
  assert (controller.status["restarts"], controller.status["restartsCountTowardsMax"]) == (3, 3)
  failed = [c for c in controller.status["conditions"] if c["type"] == "Failed"]
  assert [(c["status"], c["reason"]) for c in failed] == [("True", "ReachedMaxRestarts")]
  for job in controller.jobs:
    assert [(p.exit_code, p.action) for p in job.controller.pods(0)] == [(1, "Count")]


# ---------------------------------------------------------------- Kueue's waitForPodsReady

GPU = ("nvidia-l4", "nvidia.com/gpu")  # overlays/kueue's flavor and the resource a worker asks one of


def _gpus(kueue) -> list[int]:
  """The ClusterQueue's GPU usage, each value it took in turn."""
  return [usage.get(GPU, 0) for _, usage in kueue.usage_history]


def _kueue(config, time_scale):
  """overlays/kueue's ClusterQueue (2 GPUs), ResourceFlavor and LocalQueue, with `config` for waitForPodsReady."""
  docs = _docs(render(REPO, KUEUE))
  flavors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ResourceFlavor"}
  return KueueStandIn(_one(docs, "ClusterQueue"), flavors, _one(docs, "LocalQueue"),
                      {"kubernetes.io/metadata.name": _jobset_kueue()["metadata"]["namespace"]},
                      wait_for_pods_ready=config, time_scale=time_scale)


@functools.lru_cache(maxsize=None)
def _jobset_kueue() -> dict:
  return _one(_docs(render(REPO, JOBSET_KUEUE)), "JobSet")


def _waits_for_peer(up_dir: str, index: int) -> str:
  """A worker that, like the trainer in MultiWorkerMirroredStrategy's start-up, waits for both
  workers, then succeeds; a SIGTERM meanwhile does nothing (TensorFlow's handler swallows it there:
  docs/fault-tolerance.md), so only the grace period's SIGKILL ends it (137)."""
  return ("import os, signal, sys, time; "
          "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          f"open(os.path.join({up_dir!r}, 'up-{index}'), 'w').close(); "
          f"[time.sleep(0.05) for _ in iter(lambda: all(os.path.exists(os.path.join({up_dir!r}, f'up-{{i}}')) "
          "for i in range(2)), True)]; sys.exit(0)")


def _history(workload) -> list[tuple[str, str, str]]:
  return [(kind, status, reason) for _, kind, status, reason in workload["history"]]


def test_a_worker_left_pending_gets_the_jobset_evicted_and_requeued_until_both_run(tmp_path):
  """overlays/jobset-kueue on a shared cluster with a GPU free for only one pod (schedulable=1),
  though the ClusterQueue's quota (2 GPUs) admits both: worker 0 runs and waits for worker 1,
  which stays Pending; like the trainer's chief there, it ignores SIGTERM (grace period cut to 1 s
  here, 120 s in the manifests). waitForPodsReady (timeout 60 s, back-off base 60 s, scaled by 0.02):
  no PodsReady within the timeout, so Kueue evicts the workload (PodsReadyTimeout) and suspends the
  JobSet; JobSet suspends its Job; the Job controller deletes worker 0 (SIGTERM, then SIGKILL at the
  grace period: 137) and worker 1 (Pending: gone at once) without counting either; Kueue releases the quota as soon as the Job has
  no active pod, before worker 0 has even ended; the workload is requeued after the 60 s back-off.
  A second GPU frees up meanwhile: admitted again, both workers run, PodsReady, and it completes,
  with no failure, restart or new Job anywhere."""
  scale = 0.02
  config = kr.WaitForPodsReady(timeout_s=60, backoff_base_s=60, backoff_max_s=3600)
  kueue = _kueue(config, scale)

  def launcher(child):
    return lambda pod: Worker(pod.name, [sys.executable, "-c", _waits_for_peer(str(tmp_path), pod.index)],
                              dict(os.environ))

  jobset = copy.deepcopy(_jobset_kueue())
  jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
  controller = JobSetController(jobset, launcher, time_scale=0.01, schedulable=1)
  workload = kueue.submit(controller)
  try:
    kueue.wait_for(lambda: workload["assignment"] is None and workload["requeue_state"], 20)
    controller.add_capacity(1)  # a second GPU frees up while the workload waits out its back-off
    assert controller.wait(20) == "Completed", kueue.describe()
    kueue.wait_for(lambda: workload["finished_at"], 5)
  finally:
    kueue.stop()
    controller.stop()

  evicted_at = next(t for t, kind, status, _ in workload["history"] if (kind, status) == ("Evicted", "True"))
  released_at = kueue.usage_history[2][0]
  first, again = workload["admissions"]
  assert _history(workload) == [
      ("QuotaReserved", "True", "QuotaReserved"), ("Admitted", "True", "Admitted"),
      ("PodsReady", "False", "WaitForStart"),
      ("Evicted", "True", kr.PODS_READY_TIMEOUT),
      ("Requeued", "False", kr.PODS_READY_TIMEOUT), ("QuotaReserved", "False", "Pending"),
      ("Admitted", "False", "NoReservation"),
      ("Requeued", "True", "BackoffFinished"),
      ("QuotaReserved", "True", "QuotaReserved"), ("Admitted", "True", "Admitted"),
      ("Evicted", "False", "QuotaReserved"), ("PodsReady", "True", "Started"),
      ("Finished", "True", "Succeeded")], kueue.describe()
  assert evicted_at - first >= config.timeout_s * scale
  assert workload["requeue_state"] == {"count": 1, "requeue_at": None}
  assert again - evicted_at >= kr.requeue_wait_s(1, config) * scale
  assert _gpus(kueue) == [0, 2, 0, 2, 0]  # admitted, released on eviction, admitted, released when finished

  # One Job throughout: suspended and resumed, never restarted or recreated.
  assert (controller.status.get("restarts", 0), [j.attempt for j in controller.jobs]) == (0, [0])
  job = controller.child("workers", 0).controller
  (w0_hung, w0), (w1_pending, w1) = job.pods(0), job.pods(1)
  # Worker 0 ran until the eviction; worker 1 never got a node, so never had a process.
  assert w0_hung.deleted_at - first >= config.timeout_s * scale
  assert (w0_hung.exit_code, w0_hung.killed, w0_hung.action, w0_hung.conditions, w0_hung.counted) == (
      137, True, "Suspended", [], 0)
  assert (w1_pending.node, w1_pending.process, w1_pending.action, w1_pending.counted) == (None, None, "Suspended", 0)
  # The quota went back once the Job had no active pod, while worker 0 still ran out its grace.
  assert w0_hung.deleted_at <= released_at < w0_hung.finished_at
  assert w0_hung.finished_at - w0_hung.deleted_at >= 1  # the SIGKILL at the grace period
  assert w0.started_at >= again and w1.started_at >= again
  assert [(p.exit_code, p.action) for p in (w0, w1)] == [(0, "Succeeded")] * 2
  status = job.status
  assert (status["failed"], status["succeeded"]) == (0, 2)
  assert [(c["type"], c["reason"]) for c in status["conditions"]] == [
      ("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached"),
      ("Suspended", "JobResumed")]


def test_with_no_gpu_ever_free_the_workload_is_deactivated_after_backofflimitcount_requeues():
  """The same JobSet with no room for any pod (schedulable=0) and backoffLimitCount 2 (timeout and
  back-off base 60 s, scaled by 0.01): evicted at each timeout and requeued after 60 s, then 120 s;
  the third timeout exceeds the limit: deactivated (spec.active false, Evicted
  DeactivatedDueToRequeuingLimitExceeded), never admitted again, holding no quota and no pod."""
  scale = 0.01
  config = kr.WaitForPodsReady(timeout_s=60, backoff_base_s=60, backoff_max_s=3600, backoff_limit_count=2)
  kueue = _kueue(config, scale)
  controller = JobSetController(_jobset_kueue(), lambda child: None, time_scale=0.01, schedulable=0)
  workload = kueue.submit(controller)
  try:
    kueue.wait_for(lambda: not workload["active"] and workload["assignment"] is None, 20)
    time.sleep(0.5)  # ten of Kueue's passes: nothing more happens
  finally:
    kueue.stop()
    controller.stop()

  assert len(workload["admissions"]) == 3
  evictions = [t for t, kind, status, _ in workload["history"] if (kind, status) == ("Evicted", "True")]
  reasons = [r for _, kind, status, r in workload["history"] if (kind, status) == ("Evicted", "True")]
  assert reasons == [kr.PODS_READY_TIMEOUT] * 2 + ["DeactivatedDueTo" + kr.REQUEUING_LIMIT_EXCEEDED]
  for admitted, evicted in zip(workload["admissions"], evictions):
    assert evicted - admitted >= config.timeout_s * scale
  for count, (evicted, readmitted) in enumerate(zip(evictions, workload["admissions"][1:]), start=1):
    assert readmitted - evicted >= kr.requeue_wait_s(count, config) * scale  # 60 s, then 120 s
  assert workload["requeue_state"] is None and workload["finished_at"] is None
  assert _history(workload)[-4:] == [
      ("Evicted", "True", "DeactivatedDueTo" + kr.REQUEUING_LIMIT_EXCEEDED),
      ("Requeued", "False", "DeactivatedDueTo" + kr.REQUEUING_LIMIT_EXCEEDED),
      ("QuotaReserved", "False", "Pending"), ("Admitted", "False", "NoReservation")]
  assert _gpus(kueue) == [0, 2, 0, 2, 0, 2, 0]
  assert controller.jobset["spec"]["suspend"] is True
  job = controller.child("workers", 0).controller
  assert all(p.process is None and not p.live and p.action == "Suspended" for p in job.history)
  assert len(job.history) == 6 and job.status["failed"] == 0
