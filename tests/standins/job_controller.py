"""The batch/v1 Job controller, for Indexed Jobs, run against local processes.

What is simulated: what the controller does when one of an Indexed Job's pods
ends or is deleted (replacement, podFailurePolicy, backoffLimitPerIndex,
maxFailedIndexes, per-index back-off, podReplacementPolicy: Failed, graceful
deletion, eviction, the Job's terminal conditions), read from the Job manifest
itself. Each rule is a small function naming its source in kubernetes/kubernetes
`pkg/controller/job/` (1.31+) and its documentation; shared/RULES.md
summarises them.

What is not: there is no API server, no scheduler and no kubelet. A pod is
the process `launch(pod)` returns, created at once; pod IPs and hostnames
stay as the launcher made them. Pods have one container and no
init containers. Only the back-off delays before replacement pods are scaled
(`time_scale`); grace periods are real seconds. A Job spec field that is not
simulated raises NotImplementedError, and one the API server would refuse
raises InvalidJob, so the simulator is never kinder than the real controller;
those checks live in `standins.job_spec` (`validate`, `InvalidJob` and
`UNLIMITED` are re-exported here).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import threading
import time
import uuid
from typing import Any, Callable, Optional

from standins.job_spec import InvalidJob  # noqa: F401  (re-exported for callers)
from standins.job_spec import UNLIMITED  # noqa: F401  (re-exported for callers)
from standins.job_spec import validate

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


def match_pod_failure_policy(policy: Optional[dict], container: str, code: int,
                             conditions: list[dict]) -> tuple[str, Optional[str]]:
  """The action for a failed pod, and FailJob's message: first matching rule wins.

  Source: pod_failure_policy.go, matchPodFailurePolicy, matchOnExitCodes
  (exit code 0 never matches; containerName optional; In/NotIn) and
  matchOnPodConditions (type and status). No match counts the failure.
  Docs: DOCS#pod-failure-policy.
  """
  for i, rule in enumerate((policy or {}).get("rules", [])):
    if "onExitCodes" in rule:
      req = rule["onExitCodes"]
      matched = (code != 0 and req.get("containerName") in (None, container)
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


def pod_name(job: str, index: int) -> str:
  """`JOB-INDEX-xxxxx` (indexed_job_utils.go, podGenerateNameWithIndex)."""
  return f"{job}-{index}-" + "".join(secrets.choice(_SUFFIX) for _ in range(5))


# ------------------------------------------------------------- simulator


@dataclasses.dataclass
class Pod:
  """One pod of the Job: what `launch` gets, and one record of `history`."""
  index: int
  name: str
  uid: str
  labels: dict
  backoff_s: float  # the (unscaled) back-off waited before this pod was created
  process: Any = None
  started_at: float = 0.0
  deleted_at: Optional[float] = None  # deletionTimestamp: SIGTERM was sent
  killed: bool = False  # SIGKILL sent after the grace period
  conditions: list = dataclasses.field(default_factory=list)
  exit_code: Optional[int] = None
  finished_at: Optional[float] = None
  action: Optional[str] = None  # Succeeded, Count, Ignore, FailIndex, FailJob, or Terminated
  counted: int = 0  # the index's counted failures after this pod
  ignored: int = 0  # the index's ignored failures after this pod

  @property
  def live(self) -> bool:
    return self.finished_at is None


class JobController:
  """Runs one Indexed Job's pods with the Job controller's rules.

  Args:
    job_manifest: the Job object (a dict, as read from YAML).
    launch: starts a pod's container: launch(pod) -> an object with `.proc`
      (a subprocess.Popen), e.g. tests/workers.Worker.
    time_scale: multiplies the back-off delays only (0.01 turns 10 s into
      0.1 s); `history` records the unscaled delays. Grace periods stay real.
    uid: the Job's UID (label batch.kubernetes.io/controller-uid); a uuid4
      by default.
  """

  def __init__(self, job_manifest: dict, launch: Callable[[Pod], Any],
               time_scale: float = 1.0, uid: Optional[str] = None):
    self.spec = job_manifest["spec"]
    validate(self.spec)
    self.name = job_manifest["metadata"]["name"]
    self.uid = uid or str(uuid.uuid4())
    self.launch, self.time_scale = launch, time_scale
    pod_spec = self.spec["template"]["spec"]
    self.container = pod_spec["containers"][0]["name"]
    self.grace_s = pod_spec.get("terminationGracePeriodSeconds", 30)
    self.completions = self.spec["completions"]
    self.parallelism = self.spec.get("parallelism", 1)
    self.history: list[Pod] = []
    self.counted = [0] * self.completions
    self.ignored = [0] * self.completions
    self.completed: set[int] = set()
    self.failed: set[int] = set()
    self.conditions: list[dict] = []
    self.deleted = False  # the Job object is gone (kubectl delete job)
    self._lock = threading.RLock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name=f"job {self.name}")

  # --------------------------------------------------------- what tests do

  def start(self) -> None:
    """Starts reconciling every 50 ms in a background thread."""
    self._thread.start()

  def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
    """The container dies of `sig` with no API call: an OOM kill is SIGKILL."""
    os.kill(self._current(index).process.proc.pid, sig)

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
    deadline = time.time() + timeout
    while time.time() < deadline:
      with self._lock:
        if condition():
          return
      time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout} s\n{self.describe()}")

  def stop(self) -> None:
    """Test teardown: SIGKILL every pod left, stop reconciling."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join(timeout=5)
    for pod in self.history:
      if pod.process is not None and pod.process.proc.poll() is None:
        _signal(pod.process.proc, signal.SIGKILL)
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
    """Job.status: active, terminating, succeeded, failed, indexes, conditions."""
    with self._lock:
      live = [p for p in self.history if p.live]
      return {"active": sum(p.deleted_at is None for p in live),
              "terminating": sum(p.deleted_at is not None for p in live),
              "succeeded": sum(p.action == "Succeeded" for p in self.history),
              "failed": sum(not p.live and p.action != "Succeeded" for p in self.history),
              "completedIndexes": format_indexes(self.completed),
              "failedIndexes": format_indexes(self.failed),
              "conditions": [dict(c) for c in self.conditions]}

  def describe(self) -> str:
    """The status and every pod, one line each, for failure messages."""
    with self._lock:
      lines = [f"status: {self.status}"] + [
          f"  {p.name}: exit={p.exit_code} action={p.action} counted={p.counted} "
          f"ignored={p.ignored} backoff={p.backoff_s}s conditions={p.conditions}"
          for p in self.history]
    return "\n".join(lines)

  # ------------------------------------------------------------ internals

  def _current(self, index: int) -> Pod:
    pods = [p for p in self.history if p.index == index and p.live]
    if not pods:
      raise LookupError(f"index {index} has no live pod\n{self.describe()}")
    return pods[-1]

  def _delete(self, pod: Pod) -> None:
    if pod.live and pod.deleted_at is None:
      pod.deleted_at = time.time()
      _signal(pod.process.proc, signal.SIGTERM, group=False)

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
    for pod in self.history:
      if pod.live and pod.process.proc.poll() is not None:
        pod.finished_at = now
        pod.exit_code = exit_code(pod.process.proc.returncode)
        self._finished(pod)
      elif pod.live and not pod.killed and pod.deleted_at is not None \
          and now >= pod.deleted_at + self.grace_s:
        pod.killed = True
        _signal(pod.process.proc, signal.SIGKILL)
    live = [p for p in self.history if p.live]
    if self.deleted or self._terminal():
      return
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

  def _finished(self, pod: Pod) -> None:
    i = pod.index
    if pod.exit_code == 0:
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
    failures = [p for p in self.history if p.index == index and p.action not in (None, "Succeeded")]
    delay = backoff_delay(self.counted[index] + self.ignored[index]) if failures else 0
    if failures and now < failures[-1].finished_at + delay * self.time_scale:
      return
    labels = {**self.spec["template"].get("metadata", {}).get("labels", {}),
              "batch.kubernetes.io/controller-uid": self.uid, "controller-uid": self.uid,
              "batch.kubernetes.io/job-name": self.name, "job-name": self.name,
              "batch.kubernetes.io/job-completion-index": str(index)}
    pod = Pod(index, pod_name(self.name, index), str(uuid.uuid4()), labels, delay, started_at=now)
    self.history.append(pod)
    pod.process = self.launch(pod)


def _signal(proc, sig: int, group: bool = True) -> None:
  """SIGTERM goes to the container's main process; SIGKILL to all of it."""
  try:
    if group and os.getpgid(proc.pid) == proc.pid:
      os.killpg(proc.pid, sig)
    else:
      os.kill(proc.pid, sig)
  except ProcessLookupError:
    pass
