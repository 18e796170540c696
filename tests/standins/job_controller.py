"""The batch/v1 Job controller, for Indexed Jobs, run against local processes.

What is simulated: what the controller does when one of an Indexed Job's pods
ends or is deleted (replacement, podFailurePolicy, backoffLimitPerIndex or the
job-wide backoffLimit of JobSet's child Jobs, maxFailedIndexes, per-index back-off,
podReplacementPolicy: Failed, graceful deletion, eviction, activeDeadlineSeconds,
the Job's terminal conditions), read from the Job manifest itself. Each rule is a small function naming its source in kubernetes/kubernetes
`pkg/controller/job/` (1.31+) and its documentation.

What is not: there is no API server, no scheduler and no kubelet. A pod is
the process `launch(pod)` returns, created at once; pod IPs and hostnames
stay as the launcher made them. Pods have one container and no
init containers. Only the back-off delays before replacement pods are scaled
(`time_scale`); grace periods are real seconds. A Job spec field that is not
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
    self.deadline_s = self.spec.get("activeDeadlineSeconds")  # real seconds, not scaled
    self.started_at = 0.0  # status.startTime: set by start()
    self._lock = threading.RLock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name=f"job {self.name}")

  # --------------------------------------------------------- what tests do

  def start(self) -> None:
    """Starts reconciling every 50 ms in a background thread."""
    self.started_at = time.time()
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
      failures = [p for p in self.history if p.index == index and p.action not in (None, "Succeeded")]
      delay = backoff_delay(self.counted[index] + self.ignored[index]) if failures else 0
    else:
      # Job-wide: the Job's failed pods since its last succeeded one, ignored ones included
      # (backoff_utils.go, newBackoffRecord's failuresAfterLastSuccess, and getRemainingTime).
      ended = sorted((p for p in self.history if p.action is not None), key=lambda p: p.finished_at)
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
