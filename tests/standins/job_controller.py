"""The batch/v1 Job controller, for Indexed Jobs, run against local processes.

What is simulated: what the controller does when one of an Indexed Job's pods
ends or is deleted (replacement, podFailurePolicy, backoffLimitPerIndex or the
job-wide backoffLimit of JobSet's child Jobs, maxFailedIndexes, per-index back-off, podReplacementPolicy: Failed, graceful
deletion, eviction, activeDeadlineSeconds, the Job's terminal conditions), read from the Job manifest
itself. Each rule is a small function naming its source in kubernetes/kubernetes
`pkg/controller/job/` (1.31+) and its documentation. Around it, what the rest
of the control plane does to those pods (`standins.node_rules`): each pod is
bound to a node (`place`); a lost node (`lose_node`) goes NotReady and
unreachable-tainted after the node monitor grace period, its pods are deleted
by taint eviction after their toleration (DisruptionTarget
DeletionByTaintManager) and stay Terminating, holding their index, until the
Node is deleted (`delete_node`) or tainted out-of-service
(`taint_out_of_service`) and pod GC marks them Failed; a Job past its deadline
stays FailureTarget, not Failed, while such a pod is Terminating. Room for
pods is limited (`schedulable`, `add_capacity`): a pod that does not fit is
created Pending, counts as active, has no process and never fails on its own
(no scheduler gives up); past activeDeadlineSeconds it is deleted and gone at
once; deleted while the Job runs on, it stays Terminating until pod GC's
gcUnscheduledTerminating marks it Failed, and the pod failure policy applies. The kubelet's evictions
(`kubelet_evict`): 1 s of grace; DisruptionTarget for node pressure, none for
local storage (emptyDir sizeLimit, ephemeral-storage limits); the pod ends
Failed, reason Evicted, with the exit code its process ends with. A graceful
node shutdown (`shutdown_node`): SIGKILL after min(the pod's grace,
shutdownGracePeriod - shutdownGracePeriodCriticalPods), phase Failed, reason
Terminated, DisruptionTarget TerminationByKubelet; with shutdownGracePeriod 0
the node is simply lost. Pod priorities are not simulated: every pod is in
the non-critical group. Suspension (`suspend`, `resume`: spec.suspend, as
JobSet sets it on its child Jobs when Kueue evicts a JobSet): the Job's active
pods are deleted gracefully and never counted (`uncounted`), the Suspended
condition is True while it lasts, and resuming creates the missing pods again.

What is not: there is no API server and no real scheduler or kubelet. A pod is
the process `launch(pod)` returns, started when it is bound; pod IPs and
hostnames stay as the launcher made them, and a lost node's process is killed,
not cut off. A pod's process is what `launch` starts: an ordinary child
process dies of a SIGTERM it has no handler for, where a container's main
process, PID 1 of its PID namespace, ignores it until the SIGKILL; launchers
that need the latter run the command through `standins/pid1.py` (root only;
tests/test_job_controller_rules.py's `run(..., pid_namespace=True)`). The
trainer's launcher (tests/k8s_harness.py) does not: the trainer handles
SIGTERM, so it would change nothing there. Pods have one container and no
init containers. Node heartbeats,
node leases, zone-wide eviction rate limits and the scheduler's filters are not
modelled: a node is usable or not. Only the back-off delays before replacement
pods and the control plane's timers (node monitor grace, tolerationSeconds, pod
GC's period and quarantine) are scaled (`time_scale`); grace periods are real
seconds. A Job spec field that is not
simulated raises NotImplementedError, and one the API server would refuse
raises InvalidJob, so the simulator is never kinder than the real controller;
those checks live in `standins.job_spec` (`validate`, `InvalidJob` and
`UNLIMITED` are re-exported here), the rules themselves in `standins.job_rules`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import uuid
from typing import Any, Callable, Optional

from standins.job_spec import InvalidJob  # noqa: F401  (re-exported for callers)
from standins.job_spec import UNLIMITED  # noqa: F401  (re-exported for callers)
from standins.job_spec import validate

from standins.job_rules import (DISRUPTION_REASONS, backoff_delay, exit_code,  # noqa: F401
                                 format_indexes, index_failed, job_failed_reason, job_failure,
                                 match_pod_failure_policy, past_active_deadline,
                                 pending_indexes, pod_name)
from standins import node_rules
from standins.node_rules import OUT_OF_SERVICE, UNREACHABLE  # noqa: F401  (re-exported)


# ------------------------------------------------------------- simulator

DEFAULT_BACKOFF_LIMIT = 6  # batch/v1 types.go: backoffLimit's default without backoffLimitPerIndex


@dataclasses.dataclass
class Pod:
  """One pod of the Job: what `launch` gets, and one record of `history`."""
  index: int
  name: str
  uid: str
  labels: dict
  backoff_s: float  # the (unscaled) back-off waited before this pod was created
  process: Any = None  # None while Pending (no node yet): nothing runs
  started_at: float = 0.0  # creationTimestamp
  deleted_at: Optional[float] = None  # deletionTimestamp: Terminating
  killed: bool = False  # SIGKILL sent after the grace period
  node: Optional[str] = None  # spec.nodeName: None while unscheduled
  phase: str = "Pending"  # status.phase: Pending, Running, Succeeded, Failed
  reason: Optional[str] = None  # status.reason: Evicted, Terminated (a node shutdown)
  kill_at: Optional[float] = None  # when the grace period given with SIGTERM ends
  unreachable: bool = False  # its node was lost: no kubelet reports on it any more
  force_deleted: Optional[str] = None  # which pod GC pass removed it (gcOrphaned, ...)
  conditions: list = dataclasses.field(default_factory=list)
  exit_code: Optional[int] = None
  finished_at: Optional[float] = None
  action: Optional[str] = None  # Succeeded, Count, Ignore, FailIndex, FailJob, Terminated, or Suspended (uncounted)
  counted: int = 0  # the index's counted failures after this pod
  uncounted: bool = False  # deleted by a suspension: its tracking finalizer was removed first
  ignored: int = 0  # the index's ignored failures after this pod

  @property
  def live(self) -> bool:
    return self.finished_at is None


@dataclasses.dataclass
class Node:
  """A Node object and the machine behind it."""
  name: str
  ready: bool = True  # the Ready condition, as the node lifecycle controller keeps it
  taints: dict = dataclasses.field(default_factory=dict)  # NoExecute taint key -> when added
  lost_at: Optional[float] = None  # the machine stopped answering (lose_node)
  deleted_at: Optional[float] = None  # the Node object was deleted
  shutting_down: bool = False  # a graceful node shutdown began
  power_off_at: Optional[float] = None  # when that shutdown's period ends and the machine stops

  @property
  def usable(self) -> bool:
    """Whether the scheduler may bind a new pod here."""
    return self.ready and self.deleted_at is None and not self.taints and not self.shutting_down


class JobController:
  """Runs one Indexed Job's pods with the Job controller's rules.

  Args:
    job_manifest: the Job object (a dict, as read from YAML).
    launch: starts a pod's container: launch(pod) -> an object with `.proc`
      (a subprocess.Popen), e.g. tests/workers.Worker.
    time_scale: multiplies the back-off delays only (0.01 turns 10 s into
      0.1 s); `history` records the unscaled delays. Grace periods stay real.
      Also the control plane's timers: the node monitor grace period, the
      unreachable toleration, pod GC's period and quarantine (`node_rules`).
    uid: the Job's UID (label batch.kubernetes.io/controller-uid); a uuid4
      by default.
    place: place(pod) -> the node name the scheduler binds the pod to. By
      default `node-<index>`, or, once that node can take no pods (lost,
      tainted, shutting down, deleted), the first usable `node-<index>-<n>`:
      a replacement machine from the node pool.
    schedulable: how many pods can be bound at once (free GPUs in the
      cluster); None: no limit. A pod beyond it stays Pending.
  """

  def __init__(self, job_manifest: dict, launch: Callable[[Pod], Any],
               time_scale: float = 1.0, uid: Optional[str] = None,
               place: Optional[Callable[[Pod], str]] = None, schedulable: Optional[int] = None):
    self.spec = job_manifest["spec"]
    validate(self.spec)
    self.name = job_manifest["metadata"]["name"]
    self.uid = uid or str(uuid.uuid4())
    self.launch, self.time_scale = launch, time_scale
    pod_spec = self.spec["template"]["spec"]
    self.container = pod_spec["containers"][0]["name"]
    self.grace_s = pod_spec.get("terminationGracePeriodSeconds", 30)
    self.toleration_s = node_rules.unreachable_toleration_s(pod_spec)
    self.place = place or self._default_place
    self.schedulable = schedulable
    self.nodes: dict[str, Node] = {}
    self._quarantine: dict[str, float] = {}  # pod GC: deleted node -> when first seen missing
    self._next_gc = 0.0
    self.completions = self.spec["completions"]
    self.parallelism = self.spec.get("parallelism", 1)
    self.history: list[Pod] = []
    self.counted = [0] * self.completions
    self.ignored = [0] * self.completions
    self.completed: set[int] = set()
    self.failed: set[int] = set()
    self.conditions: list[dict] = []
    self.deleted = False  # the Job object is gone (kubectl delete job)
    self.deadline_s = self.spec.get("activeDeadlineSeconds")  # real seconds, not scaled
    self.started_at = 0.0  # status.startTime: set by start() and by resume()
    self.suspended = False  # spec.suspend (set after creation: a Job created suspended gets no controller)
    self.suspend_condition: Optional[dict] = None  # the Suspended condition, once it was ever True
    self._lock = threading.RLock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name=f"job {self.name}")

  # --------------------------------------------------------- what tests do

  def start(self) -> None:
    """Starts reconciling every 50 ms in a background thread."""
    self.started_at = time.time()
    self._next_gc = self.started_at + node_rules.PODGC_PERIOD_S * self.time_scale
    self._thread.start()

  def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
    """The container dies of `sig` with no API call: an OOM kill is SIGKILL."""
    pod = self._current(index)
    if pod.process is None:
      raise LookupError(f"{pod.name} is Pending: no container runs")
    os.kill(pod.process.proc.pid, sig)

  def delete_pod(self, index: int) -> None:
    """`kubectl delete pod`: SIGTERM, SIGKILL after the grace period; no DisruptionTarget."""
    with self._lock:
      self._delete(self._current(index))

  def evict(self, index: int, reason: str = "EvictionByEvictionAPI") -> None:
    """An eviction, preemption or kubelet termination: DisruptionTarget, then delete."""
    if reason not in DISRUPTION_REASONS:
      raise ValueError(f"{reason!r} is none of {DISRUPTION_REASONS}")
    with self._lock:
      pod = self._current(index)
      pod.conditions.append({"type": "DisruptionTarget", "status": "True", "reason": reason})
      self._delete(pod)

  def drain(self) -> None:
    """`kubectl drain`: evicts every pod not already terminating."""
    with self._lock:
      for pod in [p for p in self.history if p.live and p.deleted_at is None]:
        self.evict(pod.index)

  def lose_node(self, name: str) -> None:
    """The machine is gone (power, network, kernel panic): its containers stop, unreported.

    Nothing changes in the API by itself: the node lifecycle controller
    marks the Node NotReady and taints it `node.kubernetes.io/unreachable`
    after the node monitor grace period (40 s); the taint-eviction
    controller deletes each pod after its toleration (300 s, the
    DefaultTolerationSeconds admission plugin) with DisruptionTarget
    DeletionByTaintManager; no kubelet confirms, so the pod stays
    Terminating (not terminal) until `delete_node` or
    `taint_out_of_service` lets pod GC force-delete it. All these timers are
    multiplied by `time_scale`. Source: `standins.node_rules`;
    pkg/controller/nodelifecycle/node_lifecycle_controller.go,
    monitorNodeHealth (Ready Unknown once no heartbeat came for
    nodeMonitorGracePeriod) and doNoExecuteTaintingPass (Ready Unknown:
    the `node.kubernetes.io/unreachable` NoExecute taint; its zone rate
    limiter is not simulated).
    """
    with self._lock:
      self._lose(self.nodes[name], time.time())

  def _lose(self, node: Node, now: float) -> None:
    if node.lost_at is None:
      node.lost_at = now
    for pod in self._on(node.name):
      pod.unreachable = True
      if pod.process is not None:
        _signal(pod.process.proc, signal.SIGKILL)

  def delete_node(self, name: str) -> None:
    """`kubectl delete node` (or the cloud provider removing the VM's Node): pod GC's gcOrphaned."""
    with self._lock:
      node = self.nodes[name]
      if node.lost_at is None:
        raise NotImplementedError("deleting a running node's Node object is not simulated; lose_node first")
      node.deleted_at = time.time()

  def taint_out_of_service(self, name: str) -> None:
    """`kubectl taint node NAME node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`.

    NoExecute: the taint-eviction controller deletes every pod on it at once
    (DeletionByTaintManager); pod GC's gcTerminating then force-deletes the
    Terminating ones, once the node is NotReady.
    """
    with self._lock:
      self.nodes[name].taints.setdefault(OUT_OF_SERVICE, time.time())

  def kubelet_evict(self, index: int, cause: str = "emptyDir") -> None:
    """The kubelet's eviction manager evicts index's pod: phase Failed, reason Evicted.

    `cause`: "emptyDir" (an emptyDir past its sizeLimit), "podEphemeralStorage",
    "containerEphemeralStorage" (no DisruptionTarget), or "pressure" (the node
    past a hard eviction threshold: DisruptionTarget TerminationByKubelet).
    SIGTERM, SIGKILL 1 s later; the exit code the container ends with goes
    through podFailurePolicy. The pod is not deleted: it stays, Failed.
    Source: `node_rules.kubelet_eviction`.
    """
    grace_s, condition = node_rules.kubelet_eviction(cause)
    with self._lock:
      pod = self._running(index)
      if condition:
        node_rules.update_condition(pod.conditions, condition)
      pod.reason = "Evicted"
      self._sigterm(pod, grace_s)

  def shutdown_node(self, name: str, shutdown_grace_s: float, critical_s: float = 0) -> None:
    """A graceful node shutdown (kubelet shutdownGracePeriod / shutdownGracePeriodCriticalPods).

    Each pod gets SIGTERM and SIGKILL after min(its terminationGracePeriodSeconds,
    shutdown_grace_s - critical_s) real seconds; it ends Failed, reason
    Terminated, with DisruptionTarget TerminationByKubelet; the machine stops
    once `shutdown_grace_s` has passed. With shutdown_grace_s 0 (the kubelet's
    default: the feature is off) the machine simply goes down: `lose_node`.
    Source: `node_rules.shutdown_grace`, `node_rules.shutdown_status`.
    """
    grace_s = node_rules.shutdown_grace(self.grace_s, shutdown_grace_s, critical_s)
    if grace_s is None:
      self.lose_node(name)
      return
    reason, condition = node_rules.shutdown_status()
    with self._lock:
      node = self.nodes[name]
      node.shutting_down, node.power_off_at = True, time.time() + shutdown_grace_s
      for pod in self._on(name):
        node_rules.update_condition(pod.conditions, condition)
        pod.reason = reason
        self._sigterm(pod, grace_s)

  def add_capacity(self, pods: int = 1) -> None:
    """Room for `pods` more pods (a GPU node joined, another workload ended)."""
    with self._lock:
      if self.schedulable is None:
        raise ValueError("capacity is unlimited (schedulable=None)")
      self.schedulable += pods

  def suspend(self) -> None:
    """spec.suspend = true on a running Job (JobSet's suspendJobs): its active pods go, uncounted.

    Source: kubernetes/kubernetes pkg/controller/job/job_controller.go (1.31+),
    manageJob: a suspended Job's active pods (activePodsForRemoval: all of
    them) are deleted through deleteJobPods, which removes each pod's
    batch.kubernetes.io/job-tracking finalizer *before* the DELETE, so
    trackJobStatusAndRemoveFinalizers never sees them again: a pod that then
    ends Failed (SIGTERM, exit 143) is in neither status.failed nor the
    back-off record (getNewFinishedPods reads only pods with the finalizer),
    and no podFailurePolicy applies. Deleted without a finalizer, a Pending
    (unbound) pod is gone at once (pkg/registry/core/pod/strategy.go,
    CheckGracefulDelete: grace 0 for a pod with no node); a running one gets
    SIGTERM and SIGKILL after its terminationGracePeriodSeconds, holding its
    node (GPU) until it ends. syncJob then sets the condition Suspended True,
    reason JobSuspended, message "Job suspended" (ensureJobConditionStatus);
    status.active drops at once (FilterActivePods skips pods being deleted),
    the deleted pods count as terminating. pastActiveDeadline is not checked
    while suspended. Docs: DOCS#suspending-a-job.
    """
    with self._lock:
      if self.deleted or self.conditions:
        raise NotImplementedError("suspending a finishing, finished or deleted Job is not simulated")
      if self.suspended:
        return
      self.suspended = True
      now = time.time()
      self.suspend_condition = {"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                "message": "Job suspended", "lastTransitionTime": now}
      for pod in [p for p in self.history if p.live and p.deleted_at is None]:
        pod.uncounted, pod.deleted_at = True, now
        if pod.node is None:
          pod.finished_at = now
          self._finished(pod)
        elif pod.process is not None and not pod.unreachable and pod.kill_at is None:
          self._sigterm(pod, self.grace_s)

  def resume(self) -> None:
    """spec.suspend = false again (JobSet's resumeJobsIfNecessary): the missing pods are created.

    Source: job_controller.go, syncJob: the Suspended condition turns False,
    reason JobResumed, message "Job resumed", and status.startTime is reset
    to now (activeDeadlineSeconds counts from the resumption).
    """
    with self._lock:
      if not self.suspended:
        return
      self.suspended = False
      self.started_at = now = time.time()
      self.suspend_condition = {"type": "Suspended", "status": "False", "reason": "JobResumed",
                                "message": "Job resumed", "lastTransitionTime": now}

  def delete(self, cascade: str = "background", timeout: float = 600) -> None:
    """`kubectl delete job`: pods are deleted gracefully, nothing is replaced.

    Background (the default) removes the Job at once while its pods run out
    their grace; foreground returns once every pod has terminated. Docs:
    DOCS#job-termination-and-cleanup.
    """
    if cascade not in ("background", "foreground"):
      raise ValueError(f"cascade {cascade!r}")
    with self._lock:
      self.deleted = True
      for pod in self.history:
        self._delete(pod)
    if cascade == "foreground":
      self.wait_for(lambda: not any(p.live for p in self.history), timeout)

  def wait(self, timeout: float) -> str:
    """Blocks until the Job is Complete or Failed, and returns which."""
    if self.deleted:
      raise RuntimeError("the Job was deleted")
    self.wait_for(lambda: self._terminal() is not None, timeout)
    return self._terminal()

  def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
    """Blocks until condition() holds; raises TimeoutError with the history."""
    poll_until(self._lock, condition, timeout, self.describe)

  def stop(self) -> None:
    """Test teardown: SIGKILL every pod left, stop reconciling."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join(timeout=5)
    for pod in self.history:
      if pod.process is not None and pod.process.proc.poll() is None:
        _signal(pod.process.proc, signal.SIGKILL)
      if pod.process is not None:
        pod.process.proc.wait(timeout=30)

  # ------------------------------------------------------- what tests read

  def pod(self, index: int) -> Any:
    """The process of index's live pod, or None."""
    with self._lock:
      pods = [p for p in self.history if p.index == index and p.live]
      return pods[-1].process if pods else None

  def pods(self, index: int) -> list[Pod]:
    """Every pod index has had, oldest first."""
    with self._lock:
      return [p for p in self.history if p.index == index]

  @property
  def status(self) -> dict:
    """Job.status: active, ready, terminating, succeeded, failed, indexes, conditions.

    `ready`: active pods whose container runs (job_controller.go, countReadyPods
    over the active pods: podutil.IsPodReady). The trainer's container has no
    readinessProbe (k8s/job.yaml), so the kubelet reports it Ready once its
    container has started: here, once it is bound and its process launched.
    A Pending pod is never Ready. Pods a suspension deleted are in neither
    `failed` nor `succeeded` (`suspend`).
    """
    with self._lock:
      live = [p for p in self.history if p.live]
      conditions = [dict(c) for c in self.conditions]
      if self.suspend_condition:
        conditions.append(dict(self.suspend_condition))
      return {"active": sum(p.deleted_at is None for p in live),
              "ready": sum(p.deleted_at is None and p.process is not None and not p.unreachable for p in live),
              "terminating": sum(p.deleted_at is not None for p in live),
              "succeeded": sum(p.action == "Succeeded" for p in self.history),
              "failed": sum(not p.live and p.action not in ("Succeeded", "Suspended") for p in self.history),
              "completedIndexes": format_indexes(self.completed),
              "failedIndexes": format_indexes(self.failed),
              "conditions": conditions}

  def describe(self) -> str:
    """The status and every pod, one line each, for failure messages."""
    with self._lock:
      lines = [f"status: {self.status}"] + [
          f"  {p.name}: node={p.node} phase={p.phase} reason={p.reason} terminating={p.deleted_at is not None} "
          f"exit={p.exit_code} action={p.action} counted={p.counted} "
          f"ignored={p.ignored} backoff={p.backoff_s}s conditions={p.conditions}"
          for p in self.history] + [f"  node {n}" for n in self.nodes.values()]
    return "\n".join(lines)

  # ------------------------------------------------------------ internals

  def _current(self, index: int) -> Pod:
    pods = [p for p in self.history if p.index == index and p.live]
    if not pods:
      raise LookupError(f"index {index} has no live pod\n{self.describe()}")
    return pods[-1]

  def _delete(self, pod: Pod) -> None:
    """A graceful delete: deletionTimestamp; the kubelet, if it can, sends SIGTERM."""
    if pod.live and pod.deleted_at is None:
      pod.deleted_at = time.time()
      if node_rules.gone_at_once(pod.node is not None, bool(self.deleted or self.conditions)):
        pod.finished_at = pod.deleted_at
        self._finished(pod)
      elif pod.process is not None and not pod.unreachable and pod.kill_at is None:
        self._sigterm(pod, self.grace_s)

  def _sigterm(self, pod: Pod, grace_s: float) -> None:
    """The kubelet stops the container: SIGTERM, SIGKILL once `grace_s` (real seconds) pass."""
    now = time.time()
    if pod.kill_at is None or now + grace_s < pod.kill_at:
      pod.kill_at = now + grace_s
    _signal(pod.process.proc, signal.SIGTERM, group=False)

  def _running(self, index: int) -> Pod:
    pod = self._current(index)
    if pod.process is None or pod.unreachable:
      raise LookupError(f"{pod.name} has no container a kubelet can reach\n{self.describe()}")
    return pod

  def _on(self, node: str) -> list[Pod]:
    return [p for p in self.history if p.live and p.node == node]

  def _default_place(self, pod: Pod) -> str:
    name, n = f"node-{pod.index}", 0
    while name in self.nodes and not self.nodes[name].usable:
      n += 1
      name = f"node-{pod.index}-{n}"
    return name

  def _terminal(self) -> Optional[str]:
    done = [c["type"] for c in self.conditions if c["type"] in ("Complete", "Failed")]
    return done[0] if done else None

  def _condition(self, kind: str, reason: str, message: str) -> None:
    self.conditions.append({"type": kind, "status": "True", "reason": reason, "message": message})

  def _run(self) -> None:
    while not self._stop.wait(0.05):
      with self._lock:
        self._reconcile()

  def _reconcile(self) -> None:
    now = time.time()
    self._control_plane(now)
    for pod in self.history:
      if not pod.live or pod.process is None or pod.unreachable:
        continue
      if pod.process.proc.poll() is not None:
        pod.finished_at = now
        pod.exit_code = exit_code(pod.process.proc.returncode)
        pod.phase = "Succeeded" if pod.exit_code == 0 and pod.reason is None else "Failed"
        self._finished(pod)
      elif not pod.killed and pod.kill_at is not None and now >= pod.kill_at:
        pod.killed = True
        _signal(pod.process.proc, signal.SIGKILL)
    self._schedule(now)
    live = [p for p in self.history if p.live]
    if self.deleted or self._terminal() or self.suspended:
      return
    if not self.conditions and past_active_deadline(self.deadline_s, self.started_at, now):
      self._condition("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline")
    finishing = [c for c in self.conditions if c["type"] in ("FailureTarget", "SuccessCriteriaMet")]
    if finishing:
      # Terminal conditions wait for every pod (1.31+: job_controller.go,
      # delayTerminalCondition; DOCS#terminal-job-conditions).
      for pod in live:
        self._delete(pod)
      if not live:
        c = finishing[0]
        self._condition("Failed" if c["type"] == "FailureTarget" else "Complete",
                        c["reason"], c["message"])
      return
    held = {p.index for p in live}
    for index in pending_indexes(self.completions, self.completed | self.failed, held,
                                 self.parallelism - len(live)):
      self._create(index, now)
    self._schedule(now)

  def _control_plane(self, now: float) -> None:
    """The node lifecycle, taint-eviction and pod GC controllers (`standins.node_rules`)."""
    scale = self.time_scale
    for node in self.nodes.values():
      if node.power_off_at is not None and now >= node.power_off_at:
        self._lose(node, now)  # the shutdown period is over: the machine stops
      if node.lost_at is not None and node.ready \
          and now >= node.lost_at + node_rules.NODE_MONITOR_GRACE_S * scale:
        node.ready = False
        node.taints.setdefault(UNREACHABLE, now)
      for pod in self._on(node.name):
        if pod.deleted_at is not None or node.deleted_at is not None:
          continue
        if OUT_OF_SERVICE in node.taints or (
            UNREACHABLE in node.taints and self.toleration_s is not None
            and now >= node.taints[UNREACHABLE] + self.toleration_s * scale):
          node_rules.update_condition(pod.conditions, node_rules.taint_eviction_condition())
          self._delete(pod)
    if now < self._next_gc:
      return
    self._next_gc = now + node_rules.PODGC_PERIOD_S * scale
    for name, node in self.nodes.items():  # gcOrphaned's quarantine
      if node.deleted_at is not None and name not in self._quarantine:
        self._quarantine[name] = now
    for pod in [p for p in self.history if p.live]:
      node = self.nodes.get(pod.node) if pod.node else None
      gone = node is not None and node.deleted_at is not None
      if gone and now < self._quarantine[pod.node] + node_rules.PODGC_QUARANTINE_S * scale:
        continue
      verdict = node_rules.podgc_collects(
          terminating=pod.deleted_at is not None, scheduled=pod.node is not None,
          node_exists=not gone, node_ready=node is None or node.ready,
          out_of_service=node is not None and OUT_OF_SERVICE in node.taints)
      if verdict:
        pod.force_deleted, condition = verdict
        if condition:
          node_rules.update_condition(pod.conditions, condition)
        pod.phase, pod.finished_at = "Failed", now
        if pod.deleted_at is None:
          pod.deleted_at = now
        self._finished(pod)

  def _schedule(self, now: float) -> None:
    """Binds Pending pods, oldest first, while there is room; the kubelet starts them."""
    for pod in self.history:
      if not pod.live or pod.node is not None or pod.deleted_at is not None:
        continue
      bound = sum(p.live and p.node is not None for p in self.history)
      if self.schedulable is not None and bound >= self.schedulable:
        return
      pod.node = self.place(pod)
      self.nodes.setdefault(pod.node, Node(pod.node))
      if not self.nodes[pod.node].usable:
        raise NotImplementedError(f"place() chose {pod.node}, which takes no pods\n{self.describe()}")
      pod.phase = "Running"
      pod.process = self.launch(pod)

  def _finished(self, pod: Pod) -> None:
    i = pod.index
    if pod.uncounted:
      pod.action = "Suspended"  # its finalizer was removed before the delete: never counted (suspend)
    elif pod.phase == "Succeeded":
      pod.action = "Succeeded"
      self.completed.add(i)
    elif self.deleted or self.conditions:
      pod.action = "Terminated"  # deleted with the Job: no policy applies
    else:
      pod.action, message = match_pod_failure_policy(
          self.spec.get("podFailurePolicy"), self.container, pod.exit_code, pod.conditions)
      if pod.action == "Ignore":
        self.ignored[i] += 1
      else:
        self.counted[i] += 1
      if pod.action == "FailJob":
        self._condition("FailureTarget", "PodFailurePolicy", message.format(pod=f"default/{pod.name}"))
      elif "backoffLimitPerIndex" not in self.spec:  # the job-wide backoffLimit (JobSet's child Jobs)
        failure = job_failed_reason(None, sum(self.counted), self.spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        if failure:
          self._condition("FailureTarget", *failure)
      elif index_failed(pod.action, self.counted[i], self.spec["backoffLimitPerIndex"]):
        self.failed.add(i)
    pod.counted, pod.ignored = self.counted[i], self.ignored[i]
    if not self.conditions and len(self.completed) == self.completions:
      self._condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")
    elif not self.conditions:
      failure = job_failure(self.failed, len(self.completed | self.failed), self.completions,
                            self.spec.get("maxFailedIndexes"))
      if failure:
        self._condition("FailureTarget", *failure)

  def _create(self, index: int, now: float) -> None:
    if "backoffLimitPerIndex" in self.spec:
      failures = [p for p in self.history if p.index == index and p.action not in (None, "Succeeded", "Suspended")]
      delay = backoff_delay(self.counted[index] + self.ignored[index]) if failures else 0
    else:
      # Job-wide: the Job's failed pods since its last succeeded one, ignored ones included
      # (backoff_utils.go, newBackoffRecord's failuresAfterLastSuccess, and getRemainingTime).
      ended = sorted((p for p in self.history if p.action not in (None, "Suspended")), key=lambda p: p.finished_at)
      succeeded = [i for i, p in enumerate(ended) if p.action == "Succeeded"]
      failures = ended[succeeded[-1] + 1:] if succeeded else ended
      delay = backoff_delay(len(failures))
    if failures and now < failures[-1].finished_at + delay * self.time_scale:
      return
    labels = {**self.spec["template"].get("metadata", {}).get("labels", {}),
              "batch.kubernetes.io/controller-uid": self.uid, "controller-uid": self.uid,
              "batch.kubernetes.io/job-name": self.name, "job-name": self.name,
              "batch.kubernetes.io/job-completion-index": str(index)}
    pod = Pod(index, pod_name(self.name, index), str(uuid.uuid4()), labels, delay, started_at=now)
    self.history.append(pod)  # Pending; _schedule binds and starts it where there is room


def poll_until(lock, condition: Callable[[], bool], timeout: float, describe: Callable[[], str],
               error: Callable[[], Optional[BaseException]] = lambda: None) -> None:
  """The stand-ins' wait: every 20 ms, under `lock`, raises error() if it is set and returns
  once condition() holds; past `timeout` s, TimeoutError with describe()."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    with lock:
      if error():
        raise error()
      if condition():
        return
    time.sleep(0.02)
  raise TimeoutError(f"timed out after {timeout} s\n{describe()}")


def _signal(proc, sig: int, group: bool = True) -> None:
  """SIGTERM goes to the container's main process; SIGKILL to all of it."""
  try:
    if group and os.getpgid(proc.pid) == proc.pid:
      os.killpg(proc.pid, sig)
    else:
      os.kill(proc.pid, sig)
  except ProcessLookupError:
    pass
