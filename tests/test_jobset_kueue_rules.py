"""What the JobSet controller does with the rendered manifests, by its rules.

The rules are tests/standins/jobset_rules.py (kubernetes-sigs/jobset v0.12.0),
each a pure function naming the upstream file and function it follows, and the
Job controller's of tests/standins/job_rules.py. The manifests are
overlays/jobset and overlays/jobset-kueue as the real kustomize renders them
(tests/test_kustomize.py), once per module. No process runs: a pod's end is an
exit code handed to the Job controller's rules, a child Job's end a condition
handed to JobSet's.
"""

import copy
import functools

import pytest

from conftest import REPO
from standins import job_rules
from standins import jobset_rules as jsr
from test_kustomize import JOBSET, JOBSET_KUEUE, _docs, _one, render
from trainer import errors
from trainer.cluster import distribution

UID = "uid-of-the-jobset"  # metadata.uid, which the API server gives; kept across restarts
DISRUPTED = [{"type": "DisruptionTarget", "status": "True"}]


@functools.lru_cache(maxsize=None)
def _rendered(overlay: str) -> tuple:
  return tuple(_docs(render(REPO, overlay)))


def _jobset(overlay=JOBSET) -> dict:
  return copy.deepcopy(_one(list(_rendered(overlay)), "JobSet"))


def _workers(jobset: dict) -> dict:
  (rjob,) = jobset["spec"]["replicatedJobs"]
  return rjob


# ------------------------------------------------------------------ the two levels of failure


def _pod_ends(job: dict, code: int, conditions=(), at: float = 0.0) -> dict:
  """The child Job after one of its pods ended with `code`: the Job controller's rules
  (job_rules: podFailurePolicy, then backoffLimit), and its Failed condition if it fails."""
  spec = job["spec"]
  action, message = job_rules.match_pod_failure_policy(spec["podFailurePolicy"], "trainer", code,
                                                       list(conditions))
  verdict = job_rules.job_failed_reason(message.format(pod="cnn-trainer/pod") if action == "FailJob" else None,
                                        int(action == "Count"), spec["backoffLimit"])
  job = copy.deepcopy(job)
  if verdict:
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": verdict[0],
                                    "message": verdict[1], "lastTransitionTime": at}]
  return job


def _complete(job: dict, at: float = 0.0) -> dict:
  job = copy.deepcopy(job)
  job["status"]["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": at}]
  return job


def _start(jobset: dict) -> tuple[dict, list[dict]]:
  """A fresh JobSet's status and the child Jobs its first reconcile creates."""
  status, todo = jsr.reconcile(jobset, {}, [], UID)
  assert todo["delete"] == []
  return status, todo["create"]


def _restart(jobset: dict, status: dict, jobs: list[dict]) -> tuple[dict, list[dict]]:
  """The reconciles of a restart: the failure policy, then the old Jobs deleted (foreground: gone
  with their pods), then recreated."""
  status, todo = jsr.reconcile(jobset, status, jobs, UID)
  assert todo["delete"] == todo["create"] == []
  status, todo = jsr.reconcile(jobset, status, jobs, UID)
  assert sorted(todo["delete"]) == sorted(j["metadata"]["name"] for j in jobs) and todo["create"] == []
  for job in jobs:
    job["metadata"]["deletionTimestamp"] = "now"
  status, todo = jsr.reconcile(jobset, status, jobs, UID)
  assert todo == {"delete": [], "create": [], "suspend": [], "resume": []}  # deleting; names still taken
  status, todo = jsr.reconcile(jobset, status, [], UID)  # every old Job is gone
  return status, todo["create"]


def test_the_rendered_jobset_is_what_the_stand_in_simulates():
  js = jsr.validate(_jobset())
  policy = js["spec"]["failurePolicy"]
  assert policy["restartStrategy"] == "BlockingRecreate" and policy["maxRestarts"] == 3
  assert js["spec"]["successPolicy"] == {"operator": "All"}  # the webhook's default
  assert [r["name"] for r in policy["rules"]] == ["BadInput", "DeadlineExceeded", "Crash"]


def test_jobsets_webhook_refuses_what_it_refuses():
  js = _jobset()
  rules = js["spec"]["failurePolicy"]["rules"]
  rules.append({"name": "Crash", "action": "FailJobSet", "onJobFailureReasons": ["Evicted"]})
  with pytest.raises(jsr.InvalidJobSet, match="not unique(.|\n)*'Evicted'"):
    jsr.validate(js)
  rules[-1] = {"name": "One", "action": "RestartJob"}  # needs the RestartJob gate, off in v0.12.0
  with pytest.raises(jsr.InvalidJobSet, match="RestartJob feature gate is disabled"):
    jsr.validate(js)
  js = _jobset()
  js["spec"]["startupPolicy"] = {"startupPolicyOrder": "InOrder"}
  with pytest.raises(NotImplementedError, match="startupPolicy"):
    jsr.validate(js)


def test_exit_2_fails_the_jobset_at_once_without_a_restart():
  jobset = _jobset()
  status, (job,) = _start(jobset)
  failed = _pod_ends(job, errors.EXIT_USAGE)
  assert failed["status"]["conditions"][0]["reason"] == job_rules.POD_FAILURE_POLICY
  status, todo = jsr.reconcile(jobset, status, [failed], UID)
  (cond,) = [c for c in status["conditions"] if c["type"] == "Failed"]
  assert cond["reason"] == "FailJobSetFailurePolicyAction"  # rule BadInput
  assert cond["message"] == "applying FailJobSet failure policy action (first failed job: cnn-trainer-workers-0)"
  assert status["terminalState"] == "Failed" and status.get("restarts", 0) == 0
  assert todo["create"] == []
  # Finished: nothing is ever created again.
  assert jsr.reconcile(jobset, status, [failed], UID)[1]["create"] == []


def test_a_deadline_fails_the_jobset_at_once():
  jobset = _jobset()
  status, (job,) = _start(jobset)
  job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": job_rules.DEADLINE_EXCEEDED,
                                  "message": "Job was active longer than specified deadline",
                                  "lastTransitionTime": 0}]
  status, _ = jsr.reconcile(jobset, status, [job], UID)
  assert status["terminalState"] == "Failed" and status.get("restarts", 0) == 0


@pytest.mark.parametrize("code, conditions", [(errors.EXIT_PREEMPTED, ()), (137, DISRUPTED),
                                              (errors.EXIT_PEER_LOST, ())])
def test_preemption_replaces_the_pod_inside_the_child_job_and_spends_no_restart(code, conditions):
  """The rendered manifest maps preemption (exit 143 after a checkpoint, or DisruptionTarget) to the
  child Job's Ignore: the Job replaces the pod and never fails, so the JobSet restarts nothing and
  neither status.restarts nor restartsCountTowardsMax moves. (RestartJobSetAndIgnoreMaxRestarts, the
  JobSet-level way to restart for free, is not needed; the next test shows what it would do.)"""
  jobset = _jobset()
  status, (job,) = _start(jobset)
  after = _pod_ends(job, code, conditions)
  assert jsr.job_finished(after) is None
  spec = after["spec"]
  assert job_rules.pods_wanted(spec["suspend"], spec["completions"], 0, spec["parallelism"]) == 2
  new_status, todo = jsr.reconcile(jobset, status, [after], UID)
  assert new_status == status and todo["create"] == todo["delete"] == []


def test_restart_jobset_and_ignore_max_restarts_restarts_without_spending():
  jobset = _jobset()
  jobset["spec"]["failurePolicy"]["rules"].insert(0, {
      "name": "Preempted", "action": "RestartJobSetAndIgnoreMaxRestarts",
      "onJobFailureReasons": ["PodFailurePolicy"], "onJobFailureMessagePatterns": ["DisruptionTarget"]})
  status = {"restarts": 3, "restartsCountTowardsMax": 3}  # maxRestarts already spent
  job = jsr.construct_job(jobset, "workers", 0, 3, UID)
  job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                  "message": "Pod p has condition DisruptionTarget matching FailJob rule at index 3",
                                  "lastTransitionTime": 0}]
  status, _ = jsr.reconcile(jobset, status, [job], UID)
  assert (status["restarts"], status["restartsCountTowardsMax"]) == (4, 3)
  (cond,) = [c for c in status["conditions"] if c["type"] == "Restarting"]
  assert cond["reason"] == "FailurePolicy_Preempted" and "terminalState" not in status


def test_a_crash_spends_one_restart_and_the_crash_past_max_restarts_fails_the_jobset():
  jobset = _jobset()
  max_restarts = jobset["spec"]["failurePolicy"]["maxRestarts"]
  status, jobs = _start(jobset)
  for attempt in range(1, max_restarts + 1):
    crashed = _pod_ends(jobs[0], errors.EXIT_FAILURE, at=attempt)
    assert crashed["status"]["conditions"][0]["reason"] == job_rules.BACKOFF_LIMIT_EXCEEDED  # backoffLimit: 0
    status, jobs = _restart(jobset, status, [crashed])
    assert (status["restarts"], status["restartsCountTowardsMax"]) == (attempt, attempt)
    assert [j["metadata"]["labels"][jsr.RESTARTS_KEY] for j in jobs] == [str(attempt)]
    assert [c["reason"] for c in status["conditions"] if c["type"] == "Restarting"] == ["FailurePolicy_Crash"]
  # 137 (OOM) counts as a crash too: the (maxRestarts + 1)-th fails the JobSet.
  status, todo = jsr.reconcile(jobset, status, [_pod_ends(jobs[0], 137, at=9)], UID)
  (cond,) = [c for c in status["conditions"] if c["type"] == "Failed"]
  assert (cond["reason"], status["terminalState"]) == ("ReachedMaxRestarts", "Failed")
  assert cond["message"] == ("jobset failed due to reaching max number of restarts "
                             "(first failed job: cnn-trainer-workers-0)")
  assert status["restarts"] == max_restarts and todo["create"] == []


def test_a_restart_recreates_every_child_job_succeeded_ones_included():
  """Three child Jobs (replicas: 3, which the trainer itself refuses; only JobSet's rules run here):
  one succeeded, one crashed, one running. All three go, and none comes back until all are gone
  (BlockingRecreate); then all three, labelled and annotated with restart attempt 1."""
  jobset = _jobset()
  _workers(jobset)["replicas"] = 3
  status, jobs = _start(jobset)
  assert [j["metadata"]["name"] for j in jobs] == [f"cnn-trainer-workers-{i}" for i in range(3)]
  jobs = [_complete(jobs[0], at=1), _pod_ends(jobs[1], errors.EXIT_FAILURE, at=2), jobs[2]]
  status, todo = jsr.reconcile(jobset, status, jobs, UID)
  assert status["restarts"] == 1
  status, todo = jsr.reconcile(jobset, status, jobs, UID)
  assert sorted(todo["delete"]) == [f"cnn-trainer-workers-{i}" for i in range(3)]  # the succeeded one too
  for job in jobs:
    job["metadata"]["deletionTimestamp"] = "now"
  assert jsr.reconcile(jobset, status, jobs[2:], UID)[1]["create"] == []  # one left: BlockingRecreate waits
  _, todo = jsr.reconcile(jobset, status, [], UID)
  new = todo["create"]
  assert [j["metadata"]["name"] for j in new] == [f"cnn-trainer-workers-{i}" for i in range(3)]
  for job in new:
    pod_meta = job["spec"]["template"]["metadata"]
    for labels in (job["metadata"]["labels"], job["metadata"]["annotations"], pod_meta["labels"],
                   pod_meta["annotations"]):
      assert labels[jsr.RESTARTS_KEY] == "1" and labels[jsr.JOBSET_UID_KEY] == UID
    assert jsr.job_finished(job) is None  # the succeeded Job's work runs again
  # Under Recreate, each Job comes back as soon as its own predecessor is gone.
  jobset["spec"]["failurePolicy"]["restartStrategy"] = "Recreate"
  _, todo = jsr.reconcile(jobset, status, jobs[2:], UID)
  assert [j["metadata"]["name"] for j in todo["create"]] == ["cnn-trainer-workers-0", "cnn-trainer-workers-1"]


def test_no_rule_matching_restarts_by_default_and_no_policy_fails_at_once():
  jobset = _jobset()
  status, (job,) = _start(jobset)
  job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "MaxFailedIndexesExceeded",
                                  "message": "", "lastTransitionTime": 0}]
  restarted, _ = jsr.reconcile(jobset, status, [job], UID)
  assert restarted["restartsCountTowardsMax"] == 1
  assert [c["reason"] for c in restarted["conditions"]] == ["DefaultFailurePolicy"]
  del jobset["spec"]["failurePolicy"]
  failed, _ = jsr.reconcile(jobset, status, [job], UID)
  assert [c["reason"] for c in failed["conditions"] if c["type"] == "Failed"] == ["FailedJobs"]


def test_rules_apply_in_order_to_their_targets_and_name_the_first_failed_job():
  rules = [{"name": "Other", "action": "FailJobSet", "targetReplicatedJobs": ["driver"]},
           {"name": "Any", "action": "RestartJobSet", "onJobFailureMessagePatterns": ["^Job has"]},
           {"name": "Late", "action": "FailJobSet"}]
  jobs = []
  for i, at in ((0, 5.0), (1, 2.0)):
    job = jsr.construct_job(_jobset(), "workers", 0, 0, UID)
    job["metadata"]["name"] = f"job-{i}"
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit",
                                    "lastTransitionTime": at}]
    jobs.append(job)
  rule, job = jsr.first_matching_rule(rules, jobs)
  assert rule["name"] == "Any" and job["metadata"]["name"] == "job-1"  # the earlier failure
  del jobs[1]["metadata"]["labels"][jsr.REPLICATED_JOB_NAME_KEY]  # no parent: matches no rule
  assert jsr.first_matching_rule(rules, jobs)[1]["metadata"]["name"] == "job-0"


def test_the_jobset_completes_when_its_jobs_complete():
  jobset = _jobset()
  status, (job,) = _start(jobset)
  status, todo = jsr.reconcile(jobset, status, [_complete(job)], UID)
  (cond,) = [c for c in status["conditions"] if c["type"] == "Completed"]
  assert (cond["reason"], cond["message"]) == ("AllJobsCompleted", "jobset completed successfully")
  assert status["terminalState"] == "Completed" and todo["create"] == []
  # operator All waits for every targeted Job; Any for one.
  jobset = _jobset()
  _workers(jobset)["replicas"] = 2
  status, jobs = _start(jobset)
  assert not jsr.finished(jsr.reconcile(jobset, status, [_complete(jobs[0]), jobs[1]], UID)[0])
  jobset["spec"]["successPolicy"] = {"operator": "Any", "targetReplicatedJobs": ["workers"]}
  assert jsr.finished(jsr.reconcile(jobset, status, [_complete(jobs[0]), jobs[1]], UID)[0])


# ------------------------------------------------------------------ host names: JobSet and the trainer agree


def _pod_env(job: dict, pod_index: int) -> dict:
  """The trainer's variables in pod `pod_index` of a child Job, the downward API resolved as the kubelet
  would: JobSet's labels (construct_job), the two the API server puts on every Job's pod template
  (batch.kubernetes.io/job-name, controller-uid), and JOB_COMPLETION_INDEX from the Job controller."""
  template = job["spec"]["template"]
  labels = {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": job["metadata"]["name"],
            "batch.kubernetes.io/controller-uid": "uid-of-" + job["metadata"]["name"]}
  env = {"JOB_COMPLETION_INDEX": str(pod_index)}
  for var in template["spec"]["containers"][0]["env"]:
    if "value" in var:
      env[var["name"]] = var["value"]
    else:
      path = var["valueFrom"]["fieldRef"]["fieldPath"]
      assert path.startswith("metadata.labels['") and path.endswith("']"), path
      env[var["name"]] = labels.get(path[len("metadata.labels['"):-2], "")
  return env


@pytest.mark.parametrize("overlay", [JOBSET, JOBSET_KUEUE])
def test_the_trainer_addresses_every_worker_by_the_name_jobset_gives_it(overlay):
  jobset = _jobset(overlay)
  for restarts in (0, 2):  # a restart keeps every name and the lock's owner
    job = jsr.construct_job(jobset, "workers", 0, restarts, UID)
    hosts = jsr.pod_host_names(jobset, "workers", 0)
    assert hosts == [f"cnn-trainer-workers-0-{i}.cnn-trainer" for i in range(2)]
    assert job["spec"]["template"]["spec"]["subdomain"] == "cnn-trainer"
    for i in range(2):
      assert f"{job_rules.pod_hostname(job['metadata']['name'], i)}.cnn-trainer" == hosts[i]
      env = _pod_env(job, i)
      cluster = distribution.cluster_from_env(env)
      assert cluster.tf_config["cluster"]["worker"] == [f"{h}:2222" for h in hosts]
      assert env["TRAINER_JOB_UID"] == UID


def test_a_subdomain_of_its_own_needs_trainer_service():
  """With network.subdomain set, JobSet puts the pods there; the trainer follows only through
  TRAINER_SERVICE (trainer/cluster/kubernetes.py), which overlays/jobset leaves unset."""
  jobset = _jobset()
  jobset["spec"]["network"]["subdomain"] = "workers"
  job = jsr.construct_job(jobset, "workers", 0, 0, UID)
  hosts = [f"{h}:2222" for h in jsr.pod_host_names(jobset, "workers", 0)]
  assert hosts[0] == "cnn-trainer-workers-0-0.workers:2222"
  env = _pod_env(job, 0)
  assert distribution.cluster_from_env(env).tf_config["cluster"]["worker"] != hosts
  env["TRAINER_SERVICE"] = "workers"
  assert distribution.cluster_from_env(env).tf_config["cluster"]["worker"] == hosts
