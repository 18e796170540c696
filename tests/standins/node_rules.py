"""What the rest of the control plane does to a Job's pods: nodes, pod GC, the kubelet.

The Job controller's own rules are in `standins.job_rules`; these are the
rules of the components around it that decide when a pod stops, how, and
what its status then says, one small function each, citing its source in
kubernetes/kubernetes (`K8S` below). Read from the master branch, not a
release tag (the code index's copies: gc_controller.go at commit 003e862,
eviction_manager.go at 0239cd7, nodeshutdown_manager.go and
job_controller.go as indexed in December 2026); the behaviour used here is
that of the 1.31+ releases unless a docstring says otherwise.
standins.job_controller applies them to running pods.
"""

from __future__ import annotations

from typing import Optional

K8S = "https://github.com/kubernetes/kubernetes/blob/master/"

# pkg/controller/nodelifecycle/config/v1alpha1/defaults.go,
# RecommendedDefaultNodeLifecycleControllerConfiguration (--node-monitor-grace-period).
NODE_MONITOR_GRACE_S = 40
# plugin/pkg/admission/defaulttolerationseconds/admission.go
# (--default-unreachable-toleration-seconds).
DEFAULT_UNREACHABLE_TOLERATION_S = 300
# pkg/controller/podgc/gc_controller.go: gcCheckPeriod, quarantineTime.
PODGC_PERIOD_S = 20
PODGC_QUARANTINE_S = 40
# pkg/kubelet/eviction/eviction_manager.go: immediateEvictionGracePeriodSeconds.
IMMEDIATE_EVICTION_GRACE_S = 1

UNREACHABLE = "node.kubernetes.io/unreachable"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"

# The kubelet's local-storage evictions (eviction_manager.go, localStorageEviction)
# and its node-pressure eviction (synchronize).
LOCAL_STORAGE_EVICTIONS = ("emptyDir", "podEphemeralStorage", "containerEphemeralStorage")
PRESSURE_EVICTION = "pressure"


def disruption(reason: str, message: str) -> dict:
  return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message}


def update_condition(conditions: list, condition: dict) -> None:
  """Sets `condition`, replacing one of the same type (pkg/api/v1/pod/util.go, UpdatePodCondition)."""
  conditions[:] = [c for c in conditions if c["type"] != condition["type"]] + [condition]


def unreachable_toleration_s(pod_spec: dict) -> Optional[float]:
  """Seconds a pod stays bound to a node tainted unreachable (NoExecute), or None: forever.

  Source: plugin/pkg/admission/defaulttolerationseconds/admission.go, Admit:
  a pod with no toleration whose key is `node.kubernetes.io/unreachable` or
  empty and whose effect is NoExecute or empty gets one of 300 s; a pod's
  own such toleration is left alone, and one without tolerationSeconds
  tolerates the taint forever (pkg/controller/tainteviction/taint_eviction.go,
  getMinTolerationTime). k8s/job.yaml tolerates only nvidia.com/gpu, so 300 s.
  """
  for t in pod_spec.get("tolerations", []):
    if t.get("key") in (None, "", UNREACHABLE) and t.get("effect") in (None, "", "NoExecute"):
      return t.get("tolerationSeconds")
  return DEFAULT_UNREACHABLE_TOLERATION_S


def taint_eviction_condition() -> dict:
  """The condition the taint-eviction controller sets before it deletes a pod.

  Source: pkg/controller/tainteviction/taint_eviction.go,
  addConditionAndDeletePod: DisruptionTarget, reason DeletionByTaintManager,
  then an ordinary (graceful) delete. `node.kubernetes.io/out-of-service`
  is NoExecute too and nothing tolerates it by default, so it evicts at once.
  """
  return disruption("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")


def podgc_collects(terminating: bool, scheduled: bool, node_exists: bool, node_ready: bool,
                   out_of_service: bool) -> Optional[tuple[str, Optional[dict]]]:
  """Whether pod GC force-deletes a non-terminal pod, as which case, with which condition.

  Source: pkg/controller/podgc/gc_controller.go, gc (every gcCheckPeriod,
  20 s): gcTerminating (a Terminating pod on a node that is not Ready and has
  the out-of-service taint: no condition), gcOrphaned (a pod bound to a Node
  that no longer exists, after quarantineTime, 40 s: DisruptionTarget
  DeletionByPodGC), gcUnscheduledTerminating (a Terminating pod never bound
  to a node: no condition). markFailedAndDeletePodWithCondition sets phase
  Failed (the kubelet never will) and deletes with grace period 0. The
  container statuses stay as the kubelet last reported them (running), so
  no exit code is known and no onExitCodes rule can match.
  """
  if terminating and scheduled and node_exists and not node_ready and out_of_service:
    return "gcTerminating", None
  if scheduled and not node_exists:
    return "gcOrphaned", disruption("DeletionByPodGC", "PodGC: node no longer exists")
  if terminating and not scheduled:
    return "gcUnscheduledTerminating", None
  return None


def gone_at_once(scheduled: bool, job_finishing: bool) -> bool:
  """Whether a deleted pod disappears at once, with no kubelet and no pod GC involved.

  Source: pkg/registry/core/pod/strategy.go, CheckGracefulDelete (a pod not
  bound to a node is deleted with grace period 0) and
  pkg/controller/job/job_controller.go, canRemoveFinalizer (the Job's
  tracking finalizer, which keeps the object, is removed from every pod once
  the Job has a FailureTarget or SuccessCriteriaMet condition or is being
  deleted). An unscheduled pod deleted while the Job runs on keeps its
  finalizer (it is not Failed) and stays Terminating until pod GC's
  gcUnscheduledTerminating marks it Failed: `podgc_collects`.
  """
  return not scheduled and job_finishing


def kubelet_eviction(cause: str) -> tuple[float, Optional[dict]]:
  """The grace period and the condition of a kubelet eviction: (seconds, DisruptionTarget or None).

  Source: pkg/kubelet/eviction/eviction_manager.go. emptyDirLimitEviction,
  podEphemeralStorageLimitEviction and containerEphemeralStorageLimitEviction
  call evictPod with immediateEvictionGracePeriodSeconds (1 s) and a nil
  condition: no DisruptionTarget (the copy read, 0239cd7, adds a
  PendingTermination condition, reason EvictionByKubelet, behind the gate
  PodPendingTerminationConditions; not simulated: no podFailurePolicy here
  matches it).
  synchronize (node pressure past a hard threshold) passes 1 s too and a
  DisruptionTarget with reason TerminationByKubelet; a soft threshold uses
  --eviction-max-pod-grace-period instead (not simulated). evictPod then
  sets phase Failed, reason `Evicted` (eviction/helpers.go, Reason); the
  container's exit code is whatever it ends with after SIGTERM and, 1 s
  later, SIGKILL.
  """
  if cause in LOCAL_STORAGE_EVICTIONS:
    return IMMEDIATE_EVICTION_GRACE_S, None
  if cause == PRESSURE_EVICTION:
    return IMMEDIATE_EVICTION_GRACE_S, disruption("TerminationByKubelet", "The node was low on resource: ...")
  raise ValueError(f"{cause!r} is none of {LOCAL_STORAGE_EVICTIONS + (PRESSURE_EVICTION,)}")


def shutdown_grace(pod_grace_s: float, shutdown_grace_s: float, critical_s: float) -> Optional[float]:
  """The grace period the kubelet gives an ordinary pod at a graceful node shutdown, or None.

  Source: pkg/kubelet/nodeshutdown/nodeshutdown_manager.go, migrateConfig
  (shutdownGracePeriod 0, the default, or shorter than
  shutdownGracePeriodCriticalPods: no groups, so the feature does nothing
  and the machine simply goes down: None) and podManager.killPods (a pod of
  priority 0 is in the non-critical group, whose period is shutdownGracePeriod
  - shutdownGracePeriodCriticalPods; the pod's own
  terminationGracePeriodSeconds is used where it is not longer).
  """
  group = shutdown_grace_s - critical_s
  if shutdown_grace_s <= 0 or group < 0:
    return None
  return pod_grace_s if pod_grace_s <= group else group


def shutdown_status() -> tuple[str, dict]:
  """What killPods writes on each pod it kills: status.reason and its condition.

  Source: pkg/kubelet/nodeshutdown/nodeshutdown_manager.go, killPods' status
  function: phase Failed (unless Succeeded), reason `Terminated`, message
  "Pod was terminated in response to imminent node shutdown.", and
  DisruptionTarget with reason TerminationByKubelet.
  """
  message = "Pod was terminated in response to imminent node shutdown."
  return "Terminated", disruption("TerminationByKubelet", message)
