"""The Job-controller simulator enforces the Indexed Job rules: one test per rule.

Each rule is a function in tests/standins/job_controller.py (spec validation:
tests/standins/job_spec.py) that names its kubernetes/kubernetes source;
Pods here are tiny real processes
(`python -c ...`) that exit with a code, sleep, trap SIGTERM or ignore it, so
every test runs in seconds without root. Where a
test uses k8s/job.yaml's own Job spec, only the grace period may be shortened,
and the test says so.
"""

import copy
import os
import re
import signal
import sys
import time

import pytest
import yaml

from conftest import REPO
from k8s_harness import IndexedJob
from standins import job_controller as jc
from standins import pid1
from standins.job_controller import InvalidJob
from standins.job_controller import JobController
from standins.job_spec import api_errors
from workers import Worker

SCALE = 0.01  # back-off 10 s -> 0.1 s

# Each script prints "ready" once its signal handling is in place.
_READY = "import os, signal, sys, time; "


def exits(code: int) -> str:
  return f"import sys; sys.exit({code})"


def sleeps() -> str:
  """Dies of SIGTERM (143), as a process with no handler does."""
  return _READY + "print('ready', file=sys.stderr, flush=True); time.sleep(60)"


def traps(code: int = 143, after: float = 0.0) -> str:
  """Exits `code` `after` seconds after SIGTERM: a graceful shutdown."""
  return _READY + (f"signal.signal(signal.SIGTERM, lambda *_: (time.sleep({after}), sys.exit({code}))); "
                   "print('ready', file=sys.stderr, flush=True); time.sleep(60)")


def ignores_sigterm() -> str:
  return _READY + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', file=sys.stderr, flush=True); time.sleep(60)")


def runs_for(seconds: float) -> str:
  """Prints "ready", then exits 0 after `seconds`."""
  return _READY + f"print('ready', file=sys.stderr, flush=True); time.sleep({seconds})"


def kills_itself(sig: int) -> str:
  return f"import os; os.kill(os.getpid(), {int(sig)})"


def job_yaml(grace: float = None) -> dict:
  """k8s/job.yaml's Job, unchanged except (if given) its grace period."""
  with open(os.path.join(REPO, "k8s", "job.yaml"), encoding="utf-8") as f:
    (job,) = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "Job"]
  if grace is not None:
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = grace
  return job


def synthetic(rules=(), completions=2, parallelism=None, per_index=3, max_failed=0, grace=1, **extra):
  spec = {"completionMode": "Indexed", "completions": completions,
          "parallelism": parallelism or completions, "backoffLimitPerIndex": per_index,
          "podReplacementPolicy": "Failed",
          "template": {"metadata": {"labels": {"app": "t"}},
                       "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": grace,
                                "containers": [{"name": "main", "image": "x"}]}}, **extra}
  if max_failed is not None:
    spec["maxFailedIndexes"] = max_failed
  if rules:
    spec["podFailurePolicy"] = {"rules": list(rules)}
  return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job"}, "spec": spec}


@pytest.fixture
def run():
  """run(job, {index: [script for attempt 0, 1, ...]}) -> a started JobController.

  pid_namespace=True runs each script as PID 1 of its own PID namespace, as a
  container's main process runs (standins/pid1.py); it needs root, and skips
  saying so otherwise (a failure under CI=true: tests/no_skips_in_ci.py).
  """
  controllers = []

  def start(job, plan, time_scale=SCALE, pid_namespace=False, **cluster):
    if pid_namespace and not pid1.available():
      pytest.skip("needs root (CAP_SYS_ADMIN) to create PID namespaces")
    def launch(pod):
      scripts = plan[pod.index]
      script = scripts[min(len(ctrl.pods(pod.index)) - 1, len(scripts) - 1)]
      command = [sys.executable, "-c", script]
      return Worker(pod.name, pid1.argv(command) if pid_namespace else command, dict(os.environ))
    ctrl = JobController(job, launch, time_scale=time_scale, **cluster)
    controllers.append(ctrl)
    ctrl.start()
    return ctrl

  yield start
  for ctrl in controllers:
    ctrl.stop()


def actions(ctrl, index):
  return [p.action for p in ctrl.pods(index)]


def conditions(ctrl):
  return [(c["type"], c["reason"]) for c in ctrl.status["conditions"]]


def ready(ctrl, index, attempt=0):
  """Waits for index's pod `attempt` to be up, with its signal handling in place."""
  ctrl.wait_for(lambda: len(ctrl.pods(index)) > attempt, 10)
  ctrl.pods(index)[attempt].process.wait_for("ready", 10)


# ------------------------------------------------------------------ indexes


def test_indexed_pods_are_named_labelled_and_limited_by_parallelism(run):
  ctrl = run(synthetic(completions=4, parallelism=2), {i: [_READY + "time.sleep(0.3)"] for i in range(4)})
  assert ctrl.wait(20) == "Complete"
  for pod in ctrl.history:
    assert re.fullmatch(rf"job-{pod.index}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", pod.name)
    assert pod.labels["batch.kubernetes.io/controller-uid"] == pod.labels["controller-uid"] == ctrl.uid
    assert pod.labels["batch.kubernetes.io/job-completion-index"] == str(pod.index)
  assert sorted(p.index for p in ctrl.history) == [0, 1, 2, 3]
  # Never more than `parallelism` pods alive at once, lowest indexes first.
  edges = sorted([(p.started_at, 1) for p in ctrl.history] + [(p.finished_at, -1) for p in ctrl.history])
  alive = [sum(d for _, d in edges[:k + 1]) for k in range(len(edges))]
  assert max(alive) == 2
  assert [p.index for p in ctrl.history[:2]] == [0, 1]
  assert ctrl.status["completedIndexes"] == "0-3"


def test_a_succeeded_index_never_runs_again_while_another_is_retried(run):
  ctrl = run(job_yaml(), {0: [exits(0)], 1: [exits(1), exits(1), exits(0)]})
  assert ctrl.wait(20) == "Complete"
  assert actions(ctrl, 0) == ["Succeeded"]
  assert actions(ctrl, 1) == ["Count", "Count", "Succeeded"]
  assert ctrl.status["completedIndexes"] == "0,1"
  assert (ctrl.status["succeeded"], ctrl.status["failed"]) == (2, 2)


# ------------------------------------------------------- k8s/job.yaml's policy


def test_exit_2_fails_the_job_at_once_and_the_other_pod_is_terminated_gracefully(run):
  ctrl = run(job_yaml(), {0: [_READY + "time.sleep(0.3); sys.exit(2)"], 1: [traps(143, after=0.5)]})
  ready(ctrl, 1)
  ctrl.wait_for(lambda: ctrl.status["conditions"], 10)
  # FailureTarget first; Failed only once the other pod has terminated (1.31+).
  assert conditions(ctrl) == [("FailureTarget", "PodFailurePolicy")]
  assert ctrl.status["terminating"] == 1
  assert ctrl.wait(10) == "Failed"
  assert conditions(ctrl) == [("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")]
  (first,) = ctrl.pods(0)
  assert ctrl.status["conditions"][0]["message"] == (
      f"Container trainer for pod default/{first.name} failed with exit code 2 matching FailJob rule at index 0")
  assert actions(ctrl, 0) == ["FailJob"] and actions(ctrl, 1) == ["Terminated"]
  (other,) = ctrl.pods(1)
  assert other.exit_code == 143 and not other.killed  # SIGTERM, handled within the grace period
  assert other.finished_at - other.deleted_at >= 0.5


def test_exit_143_is_ignored_and_the_index_recreated_without_counting(run):
  ctrl = run(job_yaml(), {0: [exits(143), exits(0)], 1: [exits(0)]})
  assert ctrl.wait(20) == "Complete"
  assert actions(ctrl, 0) == ["Ignore", "Succeeded"]
  assert (ctrl.counted, ctrl.ignored) == ([0, 0], [1, 0])
  assert [p.backoff_s for p in ctrl.pods(0)] == [0, 10]
  assert conditions(ctrl) == [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
  assert ctrl.status | {"conditions": None} == {
      "active": 0, "ready": 0, "terminating": 0, "succeeded": 2, "failed": 1, "completedIndexes": "0,1",
      "failedIndexes": "", "conditions": None}


def test_an_eviction_sets_disruption_target_and_is_ignored_whatever_the_exit_code(run):
  # Exit 1 would be counted; the DisruptionTarget rule matches first.
  ctrl = run(job_yaml(), {0: [traps(1), exits(0)], 1: [exits(0)]})
  ready(ctrl, 0)
  ctrl.evict(0)
  assert ctrl.wait(20) == "Complete"
  evicted = ctrl.pods(0)[0]
  assert evicted.conditions == [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]
  assert (evicted.exit_code, evicted.action, evicted.counted, evicted.ignored) == (1, "Ignore", 0, 1)


def test_a_plain_delete_and_an_oom_kill_set_no_disruption_target_and_are_counted(run):
  ctrl = run(job_yaml(), {0: [traps(1), sleeps(), exits(0)], 1: [exits(0)]})
  ready(ctrl, 0)
  ctrl.delete_pod(0)
  ready(ctrl, 0, attempt=1)
  ctrl.kill(0, signal.SIGKILL)  # the OOM killer
  assert ctrl.wait(20) == "Complete"
  assert [(p.exit_code, p.conditions, p.action) for p in ctrl.pods(0)] == [
      (1, [], "Count"), (137, [], "Count"), (0, [], "Succeeded")]
  assert ctrl.counted == [2, 0] and [p.backoff_s for p in ctrl.pods(0)] == [0, 10, 20]


def test_drain_evicts_every_pod_and_both_indexes_resume_uncounted(run):
  ctrl = run(job_yaml(), {0: [sleeps(), exits(0)], 1: [traps(143), exits(0)]})
  ready(ctrl, 0)
  ready(ctrl, 1)
  ctrl.drain()
  assert ctrl.wait(20) == "Complete"
  assert actions(ctrl, 0) == actions(ctrl, 1) == ["Ignore", "Succeeded"]
  assert ctrl.counted == [0, 0] and ctrl.ignored == [1, 1]


def test_the_fourth_counted_failure_of_an_index_fails_the_job(run):
  # backoffLimitPerIndex 3: the 4th counted failure fails index 0; maxFailedIndexes 0.
  ctrl = run(job_yaml(), {0: [exits(1), kills_itself(signal.SIGKILL), exits(1), exits(1), exits(0)],
                          1: [traps(143)]})
  assert ctrl.wait(20) == "Failed"
  assert actions(ctrl, 0) == ["Count"] * 4
  assert [p.exit_code for p in ctrl.pods(0)] == [1, 137, 1, 1]
  assert [p.counted for p in ctrl.pods(0)] == [1, 2, 3, 4]
  assert conditions(ctrl) == [("FailureTarget", "MaxFailedIndexesExceeded"), ("Failed", "MaxFailedIndexesExceeded")]
  assert ctrl.status["failedIndexes"] == "0" and ctrl.status["completedIndexes"] == ""
  assert actions(ctrl, 1) == ["Terminated"] and ctrl.pods(1)[0].exit_code == 143


def test_k8s_job_yaml_ignores_a_lost_peer_and_counts_a_transient_failure(run):
  ctrl = run(job_yaml(), {0: [exits(129), exits(142), exits(0)], 1: [exits(0)]})
  assert ctrl.wait(20) == "Complete"
  assert actions(ctrl, 0) == ["Ignore", "Count", "Succeeded"]
  assert (ctrl.counted, ctrl.ignored) == ([1, 0], [1, 0])


def test_an_ignore_rule_for_an_exit_code_recreates_the_index_uncounted(run):
  # backoffLimitPerIndex 0: one counted failure would fail the Job.
  rule = {"action": "Ignore", "onExitCodes": {"containerName": "main", "operator": "In", "values": [129]}}
  ctrl = run(synthetic([rule], completions=1, per_index=0), {0: [exits(129), exits(129), exits(0)]})
  assert ctrl.wait(20) == "Complete"
  assert actions(ctrl, 0) == ["Ignore", "Ignore", "Succeeded"]
  assert (ctrl.counted, ctrl.ignored) == ([0], [2])


def test_the_job_wide_backoff_limit_fails_the_job_at_its_first_counted_failure(run):
  """JobSet's child Jobs (overlays/jobset): backoffLimit 0 and no backoffLimitPerIndex. An ignored
  failure is replaced after the Job's back-off; the first counted one fails the whole Job,
  BackoffLimitExceeded (job_rules.job_failed_reason), once its other pod is gone."""
  rule = {"action": "Ignore", "onExitCodes": {"containerName": "main", "operator": "In", "values": [143]}}
  job = synthetic([rule], max_failed=None, backoffLimit=0)
  del job["spec"]["backoffLimitPerIndex"]
  ctrl = run(job, {0: [traps(143)], 1: [exits(143), kills_itself(signal.SIGKILL)]})
  assert ctrl.wait(20) == "Failed"
  assert actions(ctrl, 1) == ["Ignore", "Count"] and [p.exit_code for p in ctrl.pods(1)] == [143, 137]
  assert [p.backoff_s for p in ctrl.pods(1)] == [0, 10]  # one failure of the Job's since no success
  assert actions(ctrl, 0) == ["Terminated"] and ctrl.counted == [0, 1]
  assert conditions(ctrl) == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
  assert ctrl.status["failedIndexes"] == ""  # no index fails: the Job does


# ----------------------------------------------------- replacement, back-off


def test_a_replacement_never_overlaps_its_terminating_pod(run):
  # k8s/job.yaml with a 1 s grace period instead of 120 s.
  ctrl = run(job_yaml(grace=1), {0: [ignores_sigterm(), exits(0)], 1: [exits(0)]})
  ready(ctrl, 0)
  ctrl.evict(0)
  time.sleep(0.6)
  assert len(ctrl.pods(0)) == 1 and ctrl.status["terminating"] == 1
  assert ctrl.wait(20) == "Complete"
  old, new = ctrl.pods(0)
  assert old.killed and old.exit_code == 137 and old.action == "Ignore"
  assert old.finished_at - old.deleted_at >= 1.0  # SIGKILL only after the grace period
  assert new.started_at >= old.finished_at + 10 * SCALE


def test_backoff_doubles_per_index_and_ignored_failures_lengthen_it(run):
  plan = {0: [exits(143), exits(1), exits(143), exits(1), exits(143), exits(0)], 1: [exits(0)]}
  ctrl = run(job_yaml(), plan, time_scale=0.005)
  assert ctrl.wait(20) == "Complete"
  pods = ctrl.pods(0)
  assert [p.backoff_s for p in pods] == [0, 10, 20, 40, 80, 160]
  assert [p.backoff_s for p in ctrl.pods(1)] == [0]
  for before, after in zip(pods, pods[1:]):
    assert after.started_at - before.finished_at >= after.backoff_s * 0.005
  assert (ctrl.counted[0], ctrl.ignored[0]) == (2, 3)
  assert [jc.backoff_delay(n) for n in range(8)] == [0, 10, 20, 40, 80, 160, 320, 600]
  assert jc.backoff_delay(30) == 600  # MaxJobPodFailureBackOff


# -------------------------------------------------------- podFailurePolicy


def test_rules_are_checked_in_order_and_the_first_match_wins():
  policy = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [5]}},
                      {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "NotIn",
                                                            "values": [7]}},
                      {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}
  disrupted = [{"type": "DisruptionTarget", "status": "True"}]
  assert jc.match_pod_failure_policy(policy, "main", 5, [])[0] == "Ignore"
  assert jc.match_pod_failure_policy(policy, "main", 9, disrupted) == (
      "FailJob", "Container main for pod {pod} failed with exit code 9 matching FailJob rule at index 1")
  assert jc.match_pod_failure_policy(policy, "main", 7, disrupted)[0] == "Ignore"
  assert jc.match_pod_failure_policy(policy, "main", 7, [])[0] == "Count"
  assert jc.match_pod_failure_policy(policy, "other", 9, [])[0] == "Count"  # containerName differs
  assert jc.match_pod_failure_policy(policy, "main", 0, [])[0] == "Count"  # 0 never matches NotIn
  assert jc.match_pod_failure_policy(None, "main", 9, disrupted)[0] == "Count"


def test_fail_index_fails_its_index_at_once_and_the_job_fails_once_all_finish(run):
  rule = {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}
  ctrl = run(synthetic([rule], completions=3, per_index=5, max_failed=1),
             {0: [exits(42), exits(0)], 1: [exits(0)], 2: [_READY + "time.sleep(0.5); sys.exit(1)", exits(0)]})
  ctrl.wait_for(lambda: ctrl.status["failedIndexes"] == "0", 10)
  assert ctrl.status["conditions"] == []  # 1 failed index does not exceed maxFailedIndexes 1
  assert ctrl.wait(20) == "Failed"
  assert actions(ctrl, 0) == ["FailIndex"] and actions(ctrl, 2) == ["Count", "Succeeded"]
  assert conditions(ctrl) == [("FailureTarget", "FailedIndexes"), ("Failed", "FailedIndexes")]
  assert (ctrl.status["completedIndexes"], ctrl.status["failedIndexes"]) == ("1,2", "0")


def test_indexes_are_written_as_kubernetes_writes_them():
  assert [jc.format_indexes(s) for s in ([], [0], [0, 1], [1, 3, 4, 5, 7])] == ["", "0", "0,1", "1,3-5,7"]


# ------------------------------------------------------------ Job deletion


def test_background_delete_returns_at_once_and_pods_run_out_their_grace(run):
  ctrl = run(synthetic(grace=1), {0: [ignores_sigterm()], 1: [traps(143)]})
  ready(ctrl, 0)
  ready(ctrl, 1)
  began = time.time()
  ctrl.delete()
  assert time.time() - began < 0.2 and ctrl.pod(0) is not None  # still in its grace period
  ctrl.wait_for(lambda: ctrl.pod(0) is None and ctrl.pod(1) is None, 10)
  assert [(p.exit_code, p.killed, p.action) for p in ctrl.history] == [(137, True, "Terminated"),
                                                                         (143, False, "Terminated")]
  assert len(ctrl.history) == 2  # nothing replaced


def test_foreground_delete_returns_once_every_pod_is_gone(run):
  ctrl = run(synthetic(grace=1), {0: [ignores_sigterm()], 1: [exits(0)]})
  ready(ctrl, 0)
  began = time.time()
  ctrl.delete(cascade="foreground", timeout=10)
  assert time.time() - began >= 1.0 and ctrl.pod(0) is None and ctrl.pods(0)[0].exit_code == 137


# ------------------------------------------------------------ the deadline


def test_a_job_past_its_active_deadline_fails_and_its_pods_are_stopped(run):
  """activeDeadlineSeconds bounds a Job whose pods hang (a worker waiting for a peer that
  never comes): DeadlineExceeded, the pods deleted with their grace period, nothing counted."""
  ctrl = run(synthetic(activeDeadlineSeconds=2), {0: [sleeps()], 1: [traps(143, after=0.2)]})
  began = time.time()
  assert ctrl.wait(20) == "Failed"
  assert 2.0 <= time.time() - began < 2.0 + 1 + 2  # the deadline, the 1 s grace, reconcile ticks
  failed = [c for c in ctrl.status["conditions"] if c["type"] == "Failed"]
  assert [(c["reason"], c["message"]) for c in failed] == [
      ("DeadlineExceeded", "Job was active longer than specified deadline")]
  assert [(p.index, p.exit_code, p.action) for p in ctrl.history] == [(0, 143, "Terminated"),
                                                                      (1, 143, "Terminated")]
  assert ctrl.counted == [0, 0] and ctrl.ignored == [0, 0]


def test_a_job_that_finishes_within_its_deadline_completes(run):
  ctrl = run(synthetic(activeDeadlineSeconds=30), {0: [exits(0)], 1: [exits(0)]})
  assert ctrl.wait(20) == "Complete"


# -------------------------------------------------------------- validation


@pytest.mark.parametrize("change, error, names", [
    ({"managedBy": "kueue.x-k8s.io/multikueue"}, NotImplementedError, "managedBy"),
    ({"successPolicy": {"rules": []}}, NotImplementedError, "successPolicy"),
    ({"suspend": True}, NotImplementedError, "suspend"),
    ({"backoffLimit": 6}, NotImplementedError, "backoffLimit"),
    ({"ttlSecondsAfterFinished": 0}, NotImplementedError, "ttlSecondsAfterFinished"),
    ({"podReplacementPolicy": "TerminatingOrFailed"}, InvalidJob, "podReplacementPolicy"),
])
def test_unsimulated_or_invalid_specs_are_refused(change, error, names):
  job = job_yaml()
  job["spec"].update(change)
  with pytest.raises(error, match=names):
    JobController(job, launch=None)


def _exit_rule(values, operator="In", action="FailJob", **more):
  return {"action": action, "onExitCodes": {"operator": operator, "values": values, **more}}


# The API server's own error texts (validation_test.go's cases name them).
@pytest.mark.parametrize("rules, message", [
    ([_exit_rule([3, 2])], "rules[0].onExitCodes.values: Invalid value: [3, 2]: must be ordered"),
    ([_exit_rule([2, 2])], "rules[0].onExitCodes.values[1]: Duplicate value: 2"),
    ([_exit_rule(list(range(1, 257)))], "rules[0].onExitCodes.values: Too many: 256: must have at most 255 items"),
    ([_exit_rule([])], "rules[0].onExitCodes.values: Invalid value: []: at least one value is required"),
    ([_exit_rule([0, 1])], "rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator"),
    ([_exit_rule([1], operator="Is")], 'rules[0].onExitCodes.operator: Unsupported value: "Is"'),
    ([_exit_rule([1], containerName="sidecar")], 'rules[0].onExitCodes.containerName: Invalid value: "sidecar"'),
    ([_exit_rule([i]) for i in range(1, 22)], "spec.podFailurePolicy.rules: Too many: 21: must have at most 20 items"),
    ([{"action": "Ignore"}], "rules[0]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required"),
    ([{**_exit_rule([1]), "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}],
     "rules[0]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported"),
    ([{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}],
     "rules[0].onPodConditions[0].status: Required value"),
    ([_exit_rule([1], action="Restart")], 'rules[0].action: Unsupported value: "Restart"'),
])
def test_the_api_server_refuses_a_malformed_pod_failure_policy(rules, message):
  job = job_yaml()
  job["spec"]["podFailurePolicy"]["rules"] = rules
  with pytest.raises(InvalidJob, match=re.escape(message)):
    JobController(job, launch=None)


@pytest.mark.parametrize("change, message", [
    ({"maxFailedIndexes": 1, "backoffLimitPerIndex": None},
     "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified"),
    ({"maxFailedIndexes": 3}, "spec.maxFailedIndexes: Invalid value: 3: must be less than or equal to completions"),
    ({"backoffLimitPerIndex": -1}, "spec.backoffLimitPerIndex: Invalid value: -1: must be greater than or equal to 0"),
    ({"completions": None}, "spec.completions: Required value: when completion mode is Indexed"),
    ({"completionMode": "NonIndexed"}, "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"),
])
def test_the_api_server_refuses_inconsistent_limits(change, message):
  job = job_yaml()
  for key, value in change.items():
    if value is None:
      job["spec"].pop(key, None)
    else:
      job["spec"][key] = value
  if job["spec"].get("completionMode") == "NonIndexed":
    job["spec"]["backoffLimitPerIndex"] = 1
  with pytest.raises(InvalidJob, match=re.escape(message)):
    JobController(job, launch=None)


def test_every_error_is_listed_at_once_as_the_api_server_does():
  job = job_yaml()
  job["spec"]["podFailurePolicy"]["rules"] = [_exit_rule([3, 2, 2])]
  job["spec"]["backoffLimitPerIndex"] = -1
  with pytest.raises(InvalidJob) as refused:
    JobController(job, launch=None)
  assert str(refused.value).count("\n* ") == 3  # negative limit, duplicate, unordered


def test_the_shipped_job_passes_the_api_servers_checks():
  assert api_errors(job_yaml()["spec"]) == []


def test_pod_failure_policy_requires_restart_policy_never():
  job = job_yaml()
  job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
  with pytest.raises(InvalidJob, match="restartPolicy: Never"):
    JobController(job, launch=None)


def test_terminating_or_failed_without_a_policy_is_not_simulated():
  job = synthetic(podReplacementPolicy="TerminatingOrFailed")
  with pytest.raises(NotImplementedError, match="TerminatingOrFailed"):
    JobController(job, launch=None)


def test_backoff_limit_defaults_to_unlimited_with_a_per_index_limit():
  job = job_yaml()
  job["spec"]["backoffLimit"] = jc.UNLIMITED
  JobController(copy.deepcopy(job), launch=None)  # accepted: the default, stated


# ----------------------------------------------------- the harness as launch


def test_indexed_job_pods_see_their_name_uid_and_job_uid(tmp_path):
  with open(os.path.join(REPO, "k8s", "job.yaml"), encoding="utf-8") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
  (job,) = [d for d in docs if d["kind"] == "Job"]
  job["spec"]["template"]["spec"]["containers"][0]["env"] += [
      {"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in [
          ("POD_NAME", "metadata.name"), ("POD_UID", "metadata.uid"),
          ("JOB_UID", "metadata.labels['batch.kubernetes.io/controller-uid']")]]
  path = tmp_path / "job.yaml"
  path.write_text(yaml.safe_dump_all(docs))
  indexed = IndexedJob(str(path))
  env = indexed.env(1, pod_name="cnn-trainer-1-abcde", pod_uid="p-uid", job_uid="j-uid")
  assert (env["POD_NAME"], env["POD_UID"], env["JOB_UID"], env["HOSTNAME"]) == (
      "cnn-trainer-1-abcde", "p-uid", "j-uid", "cnn-trainer-1")
  env = indexed.env(0)
  assert re.fullmatch(r"cnn-trainer-0-\w{5}", env["POD_NAME"]) and env["JOB_UID"] == indexed.uid


def test_the_shipped_job_states_its_deadline_as_the_docs_do():
  deadline = job_yaml()["spec"]["activeDeadlineSeconds"]
  docs = open(os.path.join(REPO, "docs", "fault-tolerance.md"), encoding="utf-8").read()
  assert f"`activeDeadlineSeconds: {deadline}`" in docs and deadline >= 3600


# ------------------------------------------------------------- a lost node
# The control plane's timers (node monitor grace 40 s, unreachable toleration
# 300 s, pod GC every 20 s, its quarantine 40 s) are scaled by time_scale;
# grace periods are not.

NODE_SCALE = 0.005  # 40 s -> 0.2 s, 300 s -> 1.5 s, 20 s -> 0.1 s


def disruption(pod):
  return [(c["type"], c["reason"]) for c in pod.conditions]


def test_a_lost_nodes_pod_stays_terminating_and_its_index_waits_for_the_node_to_be_deleted(run):
  ctrl = run(job_yaml(), {0: [sleeps(), exits(0)], 1: [exits(0)]}, time_scale=NODE_SCALE)
  ready(ctrl, 0)
  (lost,) = ctrl.pods(0)
  assert lost.node == "node-0"
  ctrl.lose_node("node-0")
  node = ctrl.nodes["node-0"]
  # NotReady and tainted after the node monitor grace period; deleted by the
  # taint-eviction controller after the 300 s default toleration.
  ctrl.wait_for(lambda: lost.deleted_at is not None, 10)
  assert not node.ready and jc.UNREACHABLE in node.taints
  assert lost.deleted_at - node.lost_at >= (40 + 300) * NODE_SCALE
  assert disruption(lost) == [("DisruptionTarget", "DeletionByTaintManager")]
  # No kubelet confirms: Terminating, not terminal, and podReplacementPolicy: Failed holds the index.
  time.sleep(10 * 20 * NODE_SCALE)  # ten pod GC passes
  assert (len(ctrl.pods(0)), lost.live, lost.phase, lost.exit_code) == (1, True, "Running", None)
  assert ctrl.status["terminating"] == 1 and ctrl.status["completedIndexes"] == "1"
  ctrl.delete_node("node-0")
  assert ctrl.wait(20) == "Complete"
  # Pod GC's gcOrphaned, after its quarantine: Failed, DisruptionTarget DeletionByPodGC (replacing
  # the taint manager's), no exit code; k8s/job.yaml's DisruptionTarget rule ignores it.
  assert (lost.force_deleted, lost.phase, lost.exit_code) == ("gcOrphaned", "Failed", None)
  assert lost.finished_at - node.deleted_at >= 40 * NODE_SCALE
  assert disruption(lost) == [("DisruptionTarget", "DeletionByPodGC")]
  assert (lost.action, lost.counted, lost.ignored) == ("Ignore", 0, 1)
  new = ctrl.pods(0)[1]
  assert new.node == "node-0-1" and new.started_at >= lost.finished_at and new.action == "Succeeded"


def test_an_out_of_service_taint_releases_a_lost_pod_and_without_a_disruption_rule_it_counts(run):
  # A policy with no DisruptionTarget rule: the force-deleted pod has no exit code, so it counts.
  ctrl = run(synthetic(completions=1), {0: [sleeps(), exits(0)]}, time_scale=NODE_SCALE)
  ready(ctrl, 0)
  (lost,) = ctrl.pods(0)
  ctrl.lose_node(lost.node)
  node = ctrl.nodes[lost.node]
  ctrl.wait_for(lambda: not node.ready, 10)
  assert lost.deleted_at is None  # within its 300 s toleration
  ctrl.taint_out_of_service(lost.node)
  assert ctrl.wait(20) == "Complete"
  # The NoExecute taint evicts at once; pod GC's gcTerminating marks it Failed with no condition of its own.
  assert lost.deleted_at - node.taints[jc.OUT_OF_SERVICE] < 40 * NODE_SCALE
  assert disruption(lost) == [("DisruptionTarget", "DeletionByTaintManager")]
  assert (lost.force_deleted, lost.phase, lost.exit_code) == ("gcTerminating", "Failed", None)
  assert actions(ctrl, 0) == ["Count", "Succeeded"] and ctrl.counted == [1]


def test_past_its_deadline_a_job_with_a_pod_on_a_lost_node_stays_failure_target_until_the_node_goes(run):
  """job_controller.go: FailureTarget at the deadline; the Failed condition waits while any pod is
  Terminating (enactJobFinished, delayTerminalCondition and jobCtx.terminating)."""
  ctrl = run(synthetic(activeDeadlineSeconds=2), {0: [sleeps()], 1: [traps(143)]}, time_scale=0.01)
  ready(ctrl, 0)
  ready(ctrl, 1)
  (lost,) = ctrl.pods(0)
  ctrl.lose_node(lost.node)
  ctrl.wait_for(lambda: ctrl.status["conditions"] and not ctrl.pods(1)[0].live, 10)
  time.sleep(1.0)  # 5 pod GC passes; the 300 s toleration (3 s here) has not run out
  assert conditions(ctrl) == [("FailureTarget", "DeadlineExceeded")]
  assert lost.live and lost.deleted_at is not None and ctrl.status["terminating"] == 1
  assert disruption(lost) == []  # deleted by the Job controller: no DisruptionTarget
  ctrl.taint_out_of_service(lost.node)
  assert ctrl.wait(10) == "Failed"
  assert conditions(ctrl) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
  assert (lost.force_deleted, lost.action) == ("gcTerminating", "Terminated")
  assert [len(ctrl.pods(i)) for i in (0, 1)] == [1, 1]  # nothing replaced


# ------------------------------------------------------------- Pending pods


def test_a_pod_that_does_not_fit_stays_pending_without_failing_and_starts_when_room_frees(run):
  # Room for one pod (one free GPU): index 0 runs, 1 and 2 wait, created but unbound.
  plan = {0: [runs_for(1.0)], 1: [runs_for(0.3)], 2: [exits(0)]}
  ctrl = run(synthetic(completions=3), plan, schedulable=1)
  ready(ctrl, 0)
  time.sleep(0.5)
  waiting = [ctrl.pods(i)[0] for i in (1, 2)]
  assert [(p.phase, p.node, p.process) for p in waiting] == [("Pending", None, None)] * 2
  assert ctrl.status["active"] == 3 and ctrl.status["conditions"] == []  # Pending is active
  ctrl.add_capacity(1)
  ctrl.wait_for(lambda: waiting[0].phase != "Pending", 5)
  assert waiting[1].phase == "Pending"  # still no room for it
  assert ctrl.wait(20) == "Complete"
  assert [len(ctrl.pods(i)) for i in range(3)] == [1, 1, 1]  # nothing failed, nothing replaced
  # Index 2 started only once index 1 or 0 had finished.
  assert waiting[1].process.proc.returncode == 0
  first_free = min(ctrl.pods(0)[0].finished_at, waiting[0].finished_at)
  assert waiting[1].finished_at >= first_free


def test_past_its_deadline_a_pending_pod_is_deleted_without_a_process_and_the_job_fails(run):
  ctrl = run(synthetic(activeDeadlineSeconds=2), {0: [traps(143)], 1: [exits(0)]}, schedulable=1)
  ready(ctrl, 0)
  assert ctrl.wait(20) == "Failed"
  assert conditions(ctrl) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
  (pending,) = ctrl.pods(1)
  # Never bound, never run; deleted with grace period 0, gone at once (no kubelet to wait for).
  assert (pending.node, pending.process, pending.exit_code) == (None, None, None)
  assert (pending.phase, pending.action, pending.finished_at) == ("Pending", "Terminated", pending.deleted_at)
  assert ctrl.pods(0)[0].exit_code == 143 and ctrl.counted == [0, 0]


def test_a_pending_pod_deleted_while_the_job_runs_is_failed_by_pod_gc_and_k8s_job_yaml_counts_it(run):
  # `kubectl delete pod` of a Pending worker: the Job's finalizer keeps it, Terminating, until pod
  # GC's gcUnscheduledTerminating marks it Failed: no exit code, no DisruptionTarget: counted.
  ctrl = run(job_yaml(), {0: [sleeps()], 1: [exits(0)]}, schedulable=1)
  ready(ctrl, 0)
  ctrl.delete_pod(1)
  ctrl.wait_for(lambda: len(ctrl.pods(1)) == 2, 10)
  deleted = ctrl.pods(1)[0]
  assert (deleted.force_deleted, deleted.phase, deleted.exit_code, deleted.conditions) == (
      "gcUnscheduledTerminating", "Failed", None, [])
  assert (deleted.action, ctrl.counted) == ("Count", [0, 1])
  assert ctrl.pods(1)[1].phase == "Pending"  # its replacement waits for room as it did


# ------------------------------------------------------ kubelet evictions


@pytest.mark.parametrize("cause, script, ends, action, condition", [
    # An emptyDir past its sizeLimit (k8s/job.yaml's /tmp: 2Gi): no DisruptionTarget, 1 s grace.
    # A process that does not exit within that second dies of SIGKILL: 137, counted.
    ("emptyDir", ignores_sigterm(), 137, "Count", []),
    # The same eviction of a process that exits 143 within the second: Ignored, as any 143.
    ("emptyDir", traps(143, after=0.2), 143, "Ignore", []),
    # Node pressure past a hard threshold: DisruptionTarget TerminationByKubelet: Ignored whatever the exit.
    ("pressure", ignores_sigterm(), 137, "Ignore", [("DisruptionTarget", "TerminationByKubelet")]),
])
def test_a_kubelet_eviction_gives_one_second_and_k8s_job_yaml_counts_it_only_without_disruption_target(
    run, cause, script, ends, action, condition):
  ctrl = run(job_yaml(), {0: [script, exits(0)], 1: [exits(0)]})  # the pod's own grace: 120 s
  ready(ctrl, 0)
  began = time.time()
  ctrl.kubelet_evict(0, cause)
  assert ctrl.wait(20) == "Complete"
  evicted = ctrl.pods(0)[0]
  assert (evicted.phase, evicted.reason, evicted.exit_code, evicted.action) == ("Failed", "Evicted", ends, action)
  assert disruption(evicted) == condition
  assert evicted.deleted_at is None  # the kubelet does not delete it: it stays, Failed
  if ends == 137:
    assert 1.0 <= evicted.finished_at - began < 1.0 + 2  # SIGKILL at the 1 s eviction grace, not 120 s
  assert ctrl.counted[0] == (action == "Count") and actions(ctrl, 0)[1] == "Succeeded"


# --------------------------------------------------- graceful node shutdown


def test_a_graceful_node_shutdown_kills_at_the_shutdown_grace_not_the_pods_own(run):
  # k8s/job.yaml's 120 s grace; the kubelet's shutdownGracePeriod 2 s, 1 s of it for critical pods.
  ctrl = run(job_yaml(), {0: [traps(143, after=3), exits(0)], 1: [exits(0)]})
  ready(ctrl, 0)
  began = time.time()
  ctrl.shutdown_node("node-0", shutdown_grace_s=2, critical_s=1)
  assert ctrl.wait(20) == "Complete"
  stopped, new = ctrl.pods(0)
  assert (stopped.exit_code, stopped.killed) == (137, True)  # needed 3 s, had 2 - 1 = 1 s
  assert 1.0 <= stopped.finished_at - began < 1.0 + 2
  assert (stopped.phase, stopped.reason) == ("Failed", "Terminated")
  assert disruption(stopped) == [("DisruptionTarget", "TerminationByKubelet")]
  assert (stopped.action, ctrl.counted) == ("Ignore", [0, 0])
  assert new.node == "node-0-1"  # the node shutting down takes no pods


def test_a_shutdown_grace_period_of_zero_is_no_graceful_shutdown_but_a_lost_node():
  assert jc.node_rules.shutdown_grace(120, 30, 10) == 20
  assert jc.node_rules.shutdown_grace(5, 30, 10) == 5  # the pod's own grace where shorter
  assert jc.node_rules.shutdown_grace(120, 0, 0) is None  # the kubelet's default: the feature is off
  assert jc.node_rules.shutdown_grace(120, 10, 20) is None  # critical longer than the whole: no groups


def test_a_node_shut_down_without_a_shutdown_grace_period_is_lost(run):
  ctrl = run(job_yaml(), {0: [sleeps()], 1: [exits(0)]}, time_scale=NODE_SCALE)
  ready(ctrl, 0)
  (pod,) = ctrl.pods(0)
  ctrl.shutdown_node("node-0", shutdown_grace_s=0)
  ctrl.wait_for(lambda: not ctrl.nodes["node-0"].ready, 10)
  assert pod.unreachable and pod.live and pod.reason is None and pod.exit_code is None


# ----------------------------------------------------------------- PID 1


def test_as_pid_1_a_process_without_a_sigterm_handler_runs_until_sigkill_and_is_counted(run):
  """A container's main process is PID 1 of its PID namespace: the kernel drops a signal it has
  no handler for (pid_namespaces(7)). So SIGTERM does nothing to a handler-less sleeper; it dies
  of the SIGKILL at the grace period, 137, which k8s/job.yaml counts. One with a handler gets the
  SIGTERM and its own exit code, 143, Ignored."""
  ctrl = run(job_yaml(grace=1), {0: [sleeps(), exits(0)], 1: [traps(143), exits(0)]}, pid_namespace=True)
  ready(ctrl, 0)
  ready(ctrl, 1)
  ctrl.delete_pod(0)
  ctrl.delete_pod(1)
  assert ctrl.wait(20) == "Complete"
  silent, handled = ctrl.pods(0)[0], ctrl.pods(1)[0]
  assert (silent.exit_code, silent.killed, silent.action) == (137, True, "Count")
  assert silent.finished_at - silent.deleted_at >= 1.0  # the whole grace period
  assert (handled.exit_code, handled.killed, handled.action) == (143, False, "Ignore")
  assert ctrl.counted == [1, 0]


def test_as_an_ordinary_child_a_process_without_a_sigterm_handler_dies_of_it_at_once(run):
  """The same sleeper as an ordinary child process (no PID namespace, no root needed): SIGTERM's
  default action kills it at once, 143, Ignored by k8s/job.yaml. This cannot show what a container
  does; the PID 1 test above does, where root is available."""
  ctrl = run(job_yaml(grace=1), {0: [sleeps(), exits(0)], 1: [exits(0)]})
  ready(ctrl, 0)
  ctrl.delete_pod(0)
  assert ctrl.wait(20) == "Complete"
  first = ctrl.pods(0)[0]
  assert (first.exit_code, first.killed, first.action) == (143, False, "Ignore")
  assert first.finished_at - first.deleted_at < 1.0


def test_the_unreachable_toleration_is_300_s_unless_the_pod_states_its_own():
  rule = jc.node_rules.unreachable_toleration_s
  assert rule(job_yaml()["spec"]["template"]["spec"]) == 300  # k8s/job.yaml tolerates only nvidia.com/gpu
  own = {"key": jc.UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
  assert rule({"tolerations": [own]}) == 30
  assert rule({"tolerations": [{"operator": "Exists"}]}) is None  # tolerates every taint, forever
