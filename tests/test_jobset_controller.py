"""The JobSet stand-in over processes (tests/standins/jobset_controller.py), with small scripts as pods.

What the trainer scenarios (tests/test_jobset_scenarios.py) cannot show with one child Job: when a
restart would let the old attempt's pods overlap the new attempt's. JobSet deletes child Jobs in
the foreground (jobset_controller.go, deleteJobs: DeletePropagationForeground), so a Job and its
name stay until its pods are gone and no pod of a name ever overlaps its predecessor; across child
Jobs, `Recreate` recreates each Job as soon as its own predecessor is gone, `BlockingRecreate`
(overlays/jobset's) only once every Job of the old attempt is. And a crash loop, too long for
real trainings, spending maxRestarts.
"""

import copy
import functools
import os
import sys

import pytest

from conftest import REPO
from standins import jobset_rules as jsr
from standins.jobset_controller import JobSetController
from test_job_controller_rules import exits, traps
from test_kustomize import JOBSET, _docs, _one, render
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
