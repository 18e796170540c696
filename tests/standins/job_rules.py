"""The batch/v1 Job controller's rules, one small function each, citing its source.

Sources: kubernetes/kubernetes `pkg/controller/job/` (1.31+; `K8S` below) and
the Job documentation (`DOCS`).
standins.job_controller applies them to running pods.
"""

from __future__ import annotations

import secrets
from typing import Optional

K8S = "https://github.com/kubernetes/kubernetes/blob/master/pkg/controller/job/"
DOCS = "https://kubernetes.io/docs/concepts/workloads/controllers/job/"

DEFAULT_BACKOFF_S = 10  # job_controller.go, DefaultJobPodFailureBackOff
MAX_BACKOFF_S = 600  # job_controller.go, MaxJobPodFailureBackOff (the docs say 6 min)


# ------------------------------------------------------------------ rules


def exit_code(returncode: int) -> int:
  """The container's exit code as the kubelet reports it.

  A process killed by signal N is reported as 128+N by the container runtime
  (runc/containerd; docs #pod-failure-policy's example: 137 is SIGKILL),
  where subprocess.Popen gives -N.
  """
  return 128 - returncode if returncode < 0 else returncode


def match_pod_failure_policy(policy: Optional[dict], container: str, code: Optional[int],
                             conditions: list[dict]) -> tuple[str, Optional[str]]:
  """The action for a failed pod, and FailJob's message: first matching rule wins.

  Source: pod_failure_policy.go, matchPodFailurePolicy, matchOnExitCodes
  (exit code 0 never matches; containerName optional; In/NotIn) and
  matchOnPodConditions (type and status). No match counts the failure.
  `code` None: no container terminated (a pod force-deleted by pod GC while
  its node was unreachable): matchOnExitCodes finds no terminated
  container, so no onExitCodes rule matches.
  Docs: DOCS#pod-failure-policy.
  """
  for i, rule in enumerate((policy or {}).get("rules", [])):
    if "onExitCodes" in rule:
      req = rule["onExitCodes"]
      matched = (code not in (0, None) and req.get("containerName") in (None, container)
                 and (code in req["values"]) == (req["operator"] == "In"))
      why = f"Container {container} for pod {{pod}} failed with exit code {code}"
    else:
      matched = any(c["type"] == p["type"] and c["status"] == p.get("status", "True")
                    for c in conditions for p in rule["onPodConditions"])
      why = "Pod {pod} has condition DisruptionTarget"
    if matched:
      return rule["action"], f"{why} matching {rule['action']} rule at index {i}"
  return "Count", None


def backoff_delay(failures: int) -> float:
  """Seconds before an index's replacement pod after its `failures`-th failure.

  Source: backoff_utils.go, getRemainingTimePerIndex and
  getRemainingTimeForFailuresCount: 10 s doubling, capped at
  MaxJobPodFailureBackOff (job_controller.go). The count is the index's
  absolute failure count, ignored failures included (indexed_job_utils.go,
  getNewIndexFailureCounts; kubernetes/kubernetes#130881).
  Docs: DOCS#pod-backoff-failure-policy.
  """
  return 0 if failures == 0 else min(DEFAULT_BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S)


def index_failed(action: str, counted: int, backoff_limit_per_index: int) -> bool:
  """Whether an index has failed: FailIndex, or more counted failures than the limit.

  Source: indexed_job_utils.go, isIndexFailed. Docs: DOCS#backoff-limit-per-index.
  """
  return action == "FailIndex" or counted > backoff_limit_per_index


def job_failure(failed: set, finished: int, completions: int,
                max_failed: Optional[int]) -> Optional[tuple[str, str]]:
  """The reason and message the Job fails with because of failed indexes, if any.

  Source: job_controller.go, syncJob (JobReasonMaxFailedIndexesExceeded at
  once; JobReasonFailedIndexes once every index finished). Docs:
  DOCS#backoff-limit-per-index.
  """
  if max_failed is not None and len(failed) > max_failed:
    return "MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes"
  if failed and finished == completions:
    return "FailedIndexes", "Job has failed indexes"
  return None


def pending_indexes(completions: int, done: set, live: set, room: int) -> list[int]:
  """The lowest `room` indexes that need a pod: not succeeded, failed or held.

  A pod holds its index until it has terminated (podReplacementPolicy:
  Failed: job_controller.go, onlyReplaceFailedPods; DOCS#pod-replacement-policy).
  Source: indexed_job_utils.go, firstPendingIndexes. Docs: DOCS#completion-mode.
  """
  return [i for i in range(completions) if i not in done and i not in live][:max(room, 0)]


def format_indexes(indexes) -> str:
  """`status.completedIndexes` / `failedIndexes` text: "0,1", "1,3-5".

  Source: indexed_job_utils.go, orderedIntervals.String (two neighbours are
  written "a,b", three or more "a-c").
  """
  runs: list[list[int]] = []
  for i in sorted(indexes):
    if runs and runs[-1][1] == i - 1:
      runs[-1][1] = i
    else:
      runs.append([i, i])
  return ",".join(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}" for a, b in runs)


# Reasons a DisruptionTarget condition is set with; a plain delete and an OOM
# kill set none. Docs: /docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions.
DISRUPTION_REASONS = ("PreemptionByScheduler", "DeletionByTaintManager", "EvictionByEvictionAPI",
                      "DeletionByPodGC", "TerminationByKubelet")

_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's generateName alphabet


def past_active_deadline(deadline_s: Optional[float], started_at: float, now: float) -> bool:
  """Whether the Job has run out its activeDeadlineSeconds.

  Source: job_controller.go, pastActiveDeadline: from status.startTime (set
  when the controller first syncs the Job, reset while it is suspended), at
  or past the deadline; syncJob then adds FailureTarget with reason
  DeadlineExceeded, "Job was active longer than specified deadline", deletes
  the active pods (SIGTERM, their grace period; no DisruptionTarget, so the
  pod failure policy plays no part) and marks the Job Failed once they are
  gone (delayTerminalCondition). Pending pods count against it as running
  ones do: it is the one bound on a pod that is never scheduled.
  """
  return deadline_s is not None and now - started_at >= deadline_s


def pod_name(job: str, index: int) -> str:
  """`JOB-INDEX-xxxxx` (indexed_job_utils.go, podGenerateNameWithIndex)."""
  return f"{job}-{index}-" + "".join(secrets.choice(_SUFFIX) for _ in range(5))


def pod_hostname(job: str, index: int) -> str:
  """An Indexed Job's pod's `spec.hostname`: `JOB-INDEX`, the same for every replacement.

  Source: job_controller.go, manageJob (`template.Spec.Hostname =
  fmt.Sprintf("%s-%d", job.Name, completionIndex)`). With `spec.subdomain`
  and a headless Service of that name, the pod resolves as
  `JOB-INDEX.SUBDOMAIN`. Docs: DOCS#completion-mode.
  """
  return f"{job}-{index}"


def pods_wanted(suspended: bool, completions: int, succeeded: int, parallelism: int) -> int:
  """How many pods the controller keeps running: none while the Job is suspended.

  Source: job_controller.go, manageJob (a suspended Job's active pods are
  deleted and none created; else min(completions - succeeded, parallelism),
  at least 0). Docs: DOCS#suspending-a-job.
  """
  return 0 if suspended else max(min(completions - succeeded, parallelism), 0)


# The Job's failure reasons (kubernetes/kubernetes staging/src/k8s.io/api/batch/v1/types.go).
POD_FAILURE_POLICY, BACKOFF_LIMIT_EXCEEDED, DEADLINE_EXCEEDED = (
    "PodFailurePolicy", "BackoffLimitExceeded", "DeadlineExceeded")


def job_failed_reason(fail_job_message: Optional[str], counted_failures: int, backoff_limit: int,
                      past_deadline: bool = False) -> Optional[tuple[str, str]]:
  """The reason and message a Job without backoffLimitPerIndex fails with, if any.

  Source: job_controller.go, syncJob, in its order: a FailJob rule first
  (JobReasonPodFailurePolicy, with the message `match_pod_failure_policy`
  gives, getFailJobMessage), then
  `exceedsBackoffLimit := jobCtx.failed > *job.Spec.BackoffLimit` (failures
  an Ignore rule matched are not in `failed`: nonIgnoredFailedPodsCount),
  then pastActiveDeadline. The Failed condition itself is only set once the
  Job's other pods are gone (delayTerminalCondition). Docs:
  DOCS#pod-backoff-failure-policy.
  """
  if fail_job_message is not None:
    return POD_FAILURE_POLICY, fail_job_message
  if counted_failures > backoff_limit:
    return BACKOFF_LIMIT_EXCEEDED, "Job has reached the specified backoff limit"
  if past_deadline:
    return DEADLINE_EXCEEDED, "Job was active longer than specified deadline"
  return None
