"""What the JobSet and Kueue controllers do with the rendered manifests, by their rules.

The rules are tests/standins/jobset_rules.py (kubernetes-sigs/jobset v0.12.0) and
tests/standins/kueue_rules.py (kubernetes-sigs/kueue v0.19.2), each a pure
function naming the upstream file and function it follows, and the Job
controller's of tests/standins/job_rules.py. The manifests are overlays/jobset,
overlays/jobset-kueue, overlays/job-kueue and overlays/kueue as the real
kustomize renders them (tests/test_kustomize.py), once per module. No process
runs: a pod's end is an exit code handed to the Job controller's rules, a
child Job's end a condition handed to JobSet's, time a number.
"""

import copy
import functools

import pytest

from conftest import REPO
from standins import job_rules
from standins import jobset_rules as jsr
from standins import kueue_rules as kr
from test_kustomize import JOB_KUEUE, JOBSET, JOBSET_KUEUE, KUEUE, _docs, _one, render
from trainer import errors
from trainer.cluster import resolver

UID = "uid-of-the-jobset"  # metadata.uid, which the API server gives; kept across restarts
DISRUPTED = [{"type": "DisruptionTarget", "status": "True"}]


@functools.lru_cache(maxsize=None)
def _rendered(overlay: str) -> tuple:
  return tuple(_docs(render(REPO, overlay)))


def _jobset(overlay=JOBSET) -> dict:
  return copy.deepcopy(_one(list(_rendered(overlay)), "JobSet"))


def _queued(overlay) -> dict:
  (obj,) = [copy.deepcopy(d) for d in _rendered(overlay) if d["kind"] in ("Job", "JobSet")]
  return obj


def _kueue() -> tuple[dict, dict]:
  """The example ClusterQueue and its flavors (overlays/kueue)."""
  docs = copy.deepcopy(list(_rendered(KUEUE)))
  flavors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ResourceFlavor"}
  return _one(docs, "ClusterQueue"), flavors


def _workers(jobset: dict) -> dict:
  (rjob,) = jobset["spec"]["replicatedJobs"]
  return rjob


def _with_workers(obj: dict, n: int) -> dict:
  """The rendered training with n workers, as the overlay's worker-count edit renders it
  (completions, parallelism and TRAINER_NUM_WORKERS; tests/test_kustomize.py checks that edit)."""
  obj = copy.deepcopy(obj)
  spec = _workers(obj)["template"]["spec"] if obj["kind"] == "JobSet" else obj["spec"]
  spec["completions"] = spec["parallelism"] = n
  for var in spec["template"]["spec"]["containers"][0]["env"]:
    if var["name"] == "TRAINER_NUM_WORKERS":
      var["value"] = str(n)
  return obj


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
  with pytest.raises(jsr.InvalidJobSet, match=r"reason 'Evicted'(.|\n)*indices \[2 3\] all have the same name 'Crash'"):
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
      cluster = resolver.cluster_from_env(env)
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
  assert resolver.cluster_from_env(env).tf_config["cluster"]["worker"] != hosts
  env["TRAINER_SERVICE"] = "workers"
  assert resolver.cluster_from_env(env).tf_config["cluster"]["worker"] == hosts


# ------------------------------------------------------------------ Kueue: held until the whole training fits


@pytest.mark.parametrize("overlay", [JOB_KUEUE, JOBSET_KUEUE])
def test_a_queued_training_starts_suspended_and_runs_no_pod_until_admitted(overlay):
  obj = _queued(overlay)
  assert kr.should_be_suspended(obj) and obj["spec"]["suspend"] is True
  assert kr.stays_suspended(admitted=False)
  if obj["kind"] == "JobSet":
    # The JobSet is the workload; its child Jobs are created suspended with it, not queued themselves.
    (job,) = jsr.reconcile(obj, {}, [], UID)[1]["create"]
    assert not kr.should_be_suspended(job, ancestor_managed=True) and job["spec"]["suspend"] is True
    spec = job["spec"]
  else:
    spec = obj["spec"]
  assert job_rules.pods_wanted(spec["suspend"], spec["completions"], 0, spec["parallelism"]) == 0
  assert not kr.should_be_suspended(_queued(JOBSET))  # no queue name: Kueue leaves it alone


@pytest.mark.parametrize("overlay", [JOB_KUEUE, JOBSET_KUEUE])
def test_a_training_that_fits_is_admitted_whole(overlay):
  cq, flavors = _kueue()
  sets = kr.pod_sets(_queued(overlay))
  assert [s["count"] for s in sets] == [2] and not kr.can_be_partially_admitted(sets)
  assignment = kr.assign(cq, flavors, sets, usage={})
  assert assignment["mode"] == "Fit" and assignment["counts"] == [2]
  assert assignment["flavors"] == [{"cpu": "nvidia-l4", "memory": "nvidia-l4", "nvidia.com/gpu": "nvidia-l4"}]
  # It takes the whole quota: 2 x (3 CPUs, 11Gi, 1 GPU).
  assert assignment["usage"] == kr.nominal_quota(cq) == {
      ("nvidia-l4", "cpu"): 6000, ("nvidia-l4", "memory"): 22 * 2 ** 30, ("nvidia-l4", "nvidia.com/gpu"): 2}


@pytest.mark.parametrize("overlay", [JOB_KUEUE, JOBSET_KUEUE])
def test_a_training_that_would_fit_only_in_part_stays_queued_holding_nothing(overlay):
  """Three workers on a quota for two: never admitted, not even two of them (no minCount: the manifests
  never ask for partial admission), so no pod is created and no GPU held."""
  cq, flavors = _kueue()
  obj = _with_workers(_queued(overlay), 3)
  admitted, usage, waiting = kr.schedule(
      cq, flavors, [{"name": "t", "created": 0, "pod_sets": kr.pod_sets(obj)}], usage={},
      namespace_labels={"kubernetes.io/metadata.name": "cnn-trainer"})
  assert admitted == [] and usage == {} and waiting["t"].startswith(kr.EXCEEDS_MAX_QUOTA)
  assignment = kr.assign(cq, flavors, kr.pod_sets(obj), usage={})
  assert assignment["mode"] == kr.EXCEEDS_MAX_QUOTA, assignment
  assert kr.stays_suspended(admitted=False) and obj["spec"]["suspend"] is True
  # What partial admission would have done with a Job that asked for it: 2 of 3 pods, fewer than
  # TRAINER_NUM_WORKERS, a cluster the trainer could never assemble.
  if obj["kind"] == "Job":
    obj["metadata"].setdefault("annotations", {})[kr.JOB_MIN_PARALLELISM_ANNOTATION] = "1"
    assert kr.assign(cq, flavors, kr.pod_sets(obj), usage={})["counts"] == [2]


def test_two_trainings_that_each_fit_run_one_after_the_other():
  cq, flavors = _kueue()
  namespace = {"kubernetes.io/metadata.name": "cnn-trainer"}
  first, second = ({"name": n, "created": t, "pod_sets": kr.pod_sets(_queued(JOBSET_KUEUE))}
                   for n, t in (("a", 0), ("b", 1)))
  admitted, usage, waiting = kr.schedule(cq, flavors, [second, first], usage={}, namespace_labels=namespace)
  assert [w["name"] for w, _ in admitted] == ["a"]  # the older one first
  assert waiting["b"].startswith(kr.WAITING_FOR_QUOTA) and "more needed" in waiting["b"]
  # While "a" runs, "b" stays queued, whatever the cycles.
  assert kr.schedule(cq, flavors, [second], usage, namespace)[0] == []
  # "a" finishes: its quota is released, and "b" is admitted whole.
  admitted, _, _ = kr.schedule(cq, flavors, [second], usage={}, namespace_labels=namespace)
  assert [w["name"] for w, _ in admitted] == ["b"]


def test_a_training_too_big_for_the_quota_blocks_others_only_under_strict_fifo():
  """BestEffortFIFO (the default, and overlays/kueue's) tries the next workload when the head does not fit;
  StrictFIFO would hold every later training behind a 3-worker one that can never be admitted."""
  cq, flavors = _kueue()
  namespace = {"kubernetes.io/metadata.name": "cnn-trainer"}
  big = {"name": "big", "created": 0, "pod_sets": kr.pod_sets(_with_workers(_queued(JOBSET_KUEUE), 3))}
  small = {"name": "small", "created": 1, "pod_sets": kr.pod_sets(_queued(JOBSET_KUEUE))}
  assert "queueingStrategy" not in cq["spec"]
  assert [w["name"] for w, _ in kr.schedule(cq, flavors, [big, small], {}, namespace)[0]] == ["small"]
  cq["spec"]["queueingStrategy"] = "StrictFIFO"
  assert kr.schedule(cq, flavors, [big, small], {}, namespace)[0] == []


def test_a_workload_from_another_namespace_is_never_admitted():
  cq, flavors = _kueue()
  wl = {"name": "x", "created": 0, "pod_sets": kr.pod_sets(_queued(JOB_KUEUE))}
  admitted, _, waiting = kr.schedule(cq, flavors, [wl], {}, {"kubernetes.io/metadata.name": "team-b"})
  assert admitted == [] and waiting == {"x": kr.NAMESPACE_MISMATCH}


# ------------------------------------------------------------------ waitForPodsReady


def test_waitforpodsready_defaults_are_v0_19_2s():
  config = kr.WaitForPodsReady.from_config(None)
  assert (config.timeout_s, config.backoff_base_s, config.backoff_max_s, config.backoff_limit_count,
          config.block_admission) == (1800, 60, 3600, None, False)
  docs = open(f"{REPO}/docs/kubernetes.md", encoding="utf-8").read()
  assert "default 30 min" in docs and "(default 60 s)" in docs and "(3600 s)" in docs
  assert kr.WaitForPodsReady.from_config({"timeout": "1h30m", "requeuingStrategy": {
      "backoffLimitCount": 2, "backoffBaseSeconds": 10}}) == kr.WaitForPodsReady(5400, 10, 3600, 2)
  with pytest.raises(NotImplementedError):
    kr.WaitForPodsReady.from_config({"timeout": "500ms"})


def test_the_requeue_back_off_doubles_from_its_base_up_to_its_maximum():
  config = kr.WaitForPodsReady()
  assert [kr.requeue_wait_s(n, config) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
  # A base above the maximum: the first wait is the base itself, every later one the maximum.
  odd = kr.WaitForPodsReady(backoff_base_s=5000, backoff_max_s=3600)
  assert [kr.requeue_wait_s(n, odd) for n in (1, 2, 3)] == [5000, 3600, 3600]


def test_pods_never_ready_are_evicted_at_the_timeout_and_requeued_after_the_back_off():
  """Admitted, but a worker stays Pending (no GPU node): evicted at the timeout, its pods deleted and the
  quota given back once they are gone, then requeued after 60 s, 120 s, 240 s, ... until backoffLimitCount
  requeues are spent, and deactivated at the next timeout."""
  config = kr.WaitForPodsReady(backoff_limit_count=3)
  cq, flavors = _kueue()
  namespace = {"kubernetes.io/metadata.name": "cnn-trainer"}
  wl = {"name": "t", "created": 0.0, "evicted_at": None, "pod_sets": kr.pod_sets(_queued(JOBSET_KUEUE))}
  now, count, timeline = 0.0, 0, []
  while True:
    ((admitted, _),), usage, _ = kr.schedule(cq, flavors, [wl], {}, namespace)
    assert admitted is wl and usage == kr.nominal_quota(cq)
    # One of the two pods Ready: the child Job is not ready, so neither is the workload.
    job = jsr.construct_job(_queued(JOBSET_KUEUE), "workers", 0, 0, UID)
    ready_jobs = int(jsr.job_ready(job, ready_pods=1, succeeded_pods=0))
    assert not kr.jobset_pods_ready(_queued(JOBSET_KUEUE), [{"ready": ready_jobs, "succeeded": 0}])
    now += kr.pods_ready_remaining_s(admitted_at=now, now=now, config=config)
    outcome = kr.on_pods_ready_timeout(count, now, config)
    assert not kr.quota_released(evicted=True, job_active_pods=1)  # held while a pod terminates
    assert kr.quota_released(evicted=True, job_active_pods=0)
    timeline.append((now, outcome["action"], outcome["requeue_at"]))
    if outcome["action"] == "Deactivated":
      break
    count, wl["evicted_at"], now = outcome["count"], now, outcome["requeue_at"]
  assert timeline == [(1800, "Evicted", 1860), (3660, "Evicted", 3780), (5580, "Evicted", 5820),
                      (7620, "Deactivated", None)]
  assert outcome["reason"] == kr.REQUEUING_LIMIT_EXCEEDED and count == 3


def test_requeued_workloads_queue_by_their_eviction_time():
  """requeuingStrategy.timestamp Eviction: a workload evicted by the timeout goes behind ones created
  before its eviction, whatever its own creation time."""
  order = kr.queue_order([{"name": "evicted", "created": 0, "evicted_at": 100},
                          {"name": "newer", "created": 50}, {"name": "urgent", "created": 200, "priority": 1}])
  assert [w["name"] for w in order] == ["urgent", "newer", "evicted"]


# ------------------------------------------------------------------ the arithmetic underneath


def test_quantities_and_requests_as_kueue_counts_them():
  assert [kr.resource_value("cpu", q) for q in ("3", "500m", "1.5", "0.0001")] == [3000, 500, 1500, 1]
  assert kr.resource_value("memory", "11Gi") == 11 * 2 ** 30 and kr.resource_value("memory", "1e3") == 1000
  pod = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "4"}, "requests": {"cpu": "3"}}},
                        {"resources": {"requests": {"cpu": "250m"}}}]}
  assert kr.pod_requests(pod) == {"cpu": 3250, "nvidia.com/gpu": 1}  # a limit stands in for a missing request
  pod["containers"][1]["resources"]["limits"] = {"cpu": "100m"}
  assert kr.request_errors(pod) == ["containers[1]: ['cpu']: resource requests must not exceed limits"]


def test_partial_admission_searches_like_kueue():
  assert kr.pod_set_reducer_search([10], [2], lambda c: c[0] <= 6) == [6]
  assert kr.pod_set_reducer_search([10, 4], [2, 0], lambda c: sum(c) <= 7) == [5, 2]
  assert kr.pod_set_reducer_search([10], [8], lambda c: c[0] <= 6) is None
  assert kr.pod_set_reducer_search([3], [None], lambda c: True) is None  # no minCount: all or nothing
