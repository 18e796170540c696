"""A JobSet (and Kueue on top of it) run against local processes.

`JobSetController` is JobSet v0.12.0's controller for one JobSet whose child
Jobs are `standins.job_controller.JobController`s, i.e. real processes. Every
decision is a rule of `standins.jobset_rules` (kubernetes-sigs/jobset v0.12.0,
pkg/controllers/jobset_controller.go `reconcile`, failure_policy.go,
success_policy.go): each pass hands `jobset_rules.reconcile` the child Jobs as
the API server would list them (their restart-attempt label, their Complete or
Failed condition with the time it was first seen, their deletionTimestamp) and
does what it returns:

* create: the child Job `jobset_rules.construct_job` made (name, labels and
  annotations, subdomain, suspend), run by a new JobController (a new Job UID);
  a suspended Job gets no JobController until it is resumed: a suspended Job
  has no pods (job_rules.pods_wanted).
* delete: jobset_controller.go, deleteJobs, deletes with
  `metav1.DeletePropagationForeground`: the Job is marked deleted, the garbage
  collector deletes its pods gracefully (SIGTERM, SIGKILL after the pod's
  terminationGracePeriodSeconds, no DisruptionTarget: JobController.delete),
  and the Job object stays, with its name taken, until its last pod is gone.
  Only then is it listed no more, so `jobs_to_create` (shouldCreateJob: no Job
  of that name in any state; BlockingRecreate: no Job of an earlier attempt at
  all) recreates it: under either restartStrategy no pod of the new attempt
  starts before every pod of its Job's old attempt has ended.
* resume: the JobSet was unsuspended (Kueue admitted it): the Job's pods
  start; a Job suspended before resumes its JobController (JobController.resume:
  the missing pods are created again).
* suspend: the JobSet was suspended again while it runs (`suspend`: Kueue's
  stopJob on an eviction). jobset_controller.go, suspendJobs, sets
  spec.suspend on every active child Job; the Job controller deletes their
  active pods gracefully without counting them (JobController.suspend). The
  Jobs are neither deleted nor restarted: no restart is counted.

`replicated_jobs_status` is `status.replicatedJobsStatus` (ready, succeeded,
failed, active, suspended per replicatedJob: calculateReplicatedJobStatuses),
what Kueue reads for PodsReady and IsActive. Room for pods (`schedulable`,
`add_capacity`) is the JobController's, for a JobSet of one child Job.

What is not: the headless Service (the pods' names resolve through the test's
PodNetwork), events, metrics, the JobSet's own Suspended condition, capacity
shared between child Jobs (NotImplementedError), and whatever
jobset_rules.validate refuses.

`KueueStandIn` is Kueue v0.19.2 for JobSets on one ClusterQueue
(standins.kueue_rules, kubernetes-sigs/kueue v0.19.2): the webhook creates a
JobSet with a queue name suspended (jobframework/utils.go,
WorkloadShouldBeSuspended), its Workload's pod sets are jobs/jobset's PodSets,
the scheduler admits whole workloads in queue order while they fit the
nominal quota (scheduler.go, schedule), an admitted JobSet is unsuspended
(jobframework/reconciler.go, ReconcileGenericJob step 7, startJob), and a
finished JobSet's workload is Finished (reconciler.go step 3, jobs/jobset
Finished: Completed or Failed True), which removes its usage from the cache
and requeues the workloads waiting for quota (core/workload_controller.go,
WorkloadReconciler.Update: cache.DeleteWorkload,
QueueAssociatedInadmissibleWorkloadsAfter). And waitForPodsReady
(`wait_for_pods_ready`, on by default as in v0.19.2; its timeout and back-off
multiplied by `time_scale`): the PodsReady condition from the JobSet's
replicatedJobsStatus (jobs/jobset PodsReady: ready + succeeded Jobs equal the
replicas; a Job is ready once its ready + succeeded pods reach its
parallelism), an admitted workload not PodsReady within the timeout of its
admission is evicted (Evicted True, reason PodsReadyTimeout;
core/workload_controller.go, reconcileNotReadyTimeout), requeueState.count
+1 and requeueAt after the back-off (workload.go, UpdateRequeueState), its
JobSet suspended (jobframework/reconciler.go step 6, stopJob: JobSet.Suspend),
the quota released once the JobSet has no active Job (step 6: !IsActive, then
UnsetQuotaReservationWithCondition; Requeued False), queued again once
requeueAt passes (Requeued True, BackoffFinished), and, past
backoffLimitCount, deactivated (triggerDeactivation, then spec.active false
and Evicted reason DeactivatedDueToRequeuingLimitExceeded): never admitted
again. Every condition change is in the workload's `history`, every usage
in `usage_history`. Not: the recoveryTimeout (a workload once PodsReady is
never evicted), preemption, cohorts, the flavor's node selector injected into the
pods (the manifests already carry it), and a LocalQueue other than the one
given (NotImplementedError).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import uuid
from typing import Any, Callable, Optional

from standins import jobset_rules as jsr
from standins import kueue_rules as kr
from standins.job_controller import JobController, poll_until


@dataclasses.dataclass
class ChildJob:
  """One child Job JobSet created: what the API server holds, and its JobController."""
  manifest: dict  # the batch/v1 Job, as jobset_rules.construct_job made it
  created_at: float
  controller: Optional[JobController] = None  # None while suspended
  resumed_at: Optional[float] = None
  deleted_at: Optional[float] = None  # metadata.deletionTimestamp (foreground)
  gone_at: Optional[float] = None  # the object is gone: its last pod has ended
  finished: Optional[tuple[str, float]] = None  # (Complete or Failed, when first seen)

  @property
  def name(self) -> str:
    return self.manifest["metadata"]["name"]

  @property
  def attempt(self) -> int:
    """Its restart attempt (the jobset.sigs.k8s.io/restart-attempt label)."""
    return int(self.manifest["metadata"]["labels"][jsr.RESTARTS_KEY])

  def pods(self) -> list:
    """Its pods (standins.job_controller.Pod), every index, oldest first."""
    return list(self.controller.history) if self.controller else []

  def as_listed(self) -> dict:
    """The Job as the JobSet controller lists it."""
    job = copy.deepcopy(self.manifest)
    if self.deleted_at is not None:
      job["metadata"]["deletionTimestamp"] = self.deleted_at
    conditions = []
    if self.controller is not None:
      for cond in self.controller.status["conditions"]:
        cond = dict(cond)
        if self.finished and cond["type"] == self.finished[0]:
          cond["lastTransitionTime"] = self.finished[1]
        conditions.append(cond)
    job["status"] = {"conditions": conditions}
    return job


class JobSetController:
  """Runs one JobSet's child Jobs as real processes, by JobSet v0.12.0's rules.

  Args:
    jobset: the JobSet (a dict, as rendered by kustomize).
    launcher: launcher(child_job) -> launch(pod) for that child Job's
      JobController (e.g. k8s_harness.IndexedJob(...).launcher(...)).
    time_scale: the child Jobs' back-off scale (JobController's).
    uid: the JobSet's metadata.uid, the same across restarts; a uuid4 by default.
  """

  def __init__(self, jobset: dict, launcher: Callable[[dict], Callable[[Any], Any]],
               time_scale: float = 1.0, uid: Optional[str] = None, schedulable: Optional[int] = None):
    self.jobset = jsr.validate(copy.deepcopy(jobset))
    if schedulable is not None and sum(r.get("replicas", 1) for r in self.jobset["spec"]["replicatedJobs"]) != 1:
      raise NotImplementedError("room for pods shared between child Jobs is not simulated")
    self.schedulable = schedulable  # JobController's: how many pods can be bound at once
    self.name = self.jobset["metadata"]["name"]
    self.uid = uid or str(uuid.uuid4())
    self.launcher, self.time_scale = launcher, time_scale
    self.status: dict = {}  # JobSet.status: restarts, restartsCountTowardsMax, conditions, terminalState
    self.statuses: list[tuple[float, dict]] = []  # every status it had, with when
    self.jobs: list[ChildJob] = []  # every child Job ever created, oldest first
    self.error: Optional[BaseException] = None
    self._lock = threading.RLock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name=f"jobset {self.name}")

  # --------------------------------------------------------- what tests do

  def start(self) -> None:
    """`kubectl apply`: reconciles every 50 ms in a background thread."""
    self._thread.start()

  def resume(self) -> None:
    """spec.suspend = false, as Kueue's startJob sets it on admission."""
    with self._lock:
      self.jobset["spec"]["suspend"] = False

  def suspend(self) -> None:
    """spec.suspend = true while it runs, as Kueue's stopJob sets it (jobs/jobset, JobSet.Suspend)."""
    with self._lock:
      self.jobset["spec"]["suspend"] = True

  def add_capacity(self, pods: int = 1) -> None:
    """Room for `pods` more pods (JobController.add_capacity), now and for Jobs created later."""
    with self._lock:
      if self.schedulable is None:
        raise ValueError("capacity is unlimited (schedulable=None)")
      self.schedulable += pods
      for job in self.jobs:
        if job.controller:
          job.controller.add_capacity(pods)

  def wait(self, timeout: float) -> str:
    """Blocks until the JobSet is Completed or Failed, and returns which."""
    self.wait_for(lambda: jsr.finished(self.status), timeout)
    return self.status["terminalState"]

  def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
    poll_until(self._lock, condition, timeout, self.describe, lambda: self.error)

  def stop(self) -> None:
    """Test teardown: stop reconciling, SIGKILL every pod left."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join(timeout=5)
    for job in self.jobs:
      if job.controller:
        job.controller.stop()

  # ------------------------------------------------------- what tests read

  def child(self, replicated_job: str, job_index: int, attempt: Optional[int] = None) -> ChildJob:
    """A child Job: of `attempt`, else the latest created."""
    name = jsr.job_name(self.name, replicated_job, job_index)
    with self._lock:
      jobs = [j for j in self.jobs if j.name == name and attempt in (None, j.attempt)]
    if not jobs:
      raise LookupError(f"no child Job {name} (attempt {attempt})\n{self.describe()}")
    return jobs[-1]

  def replicated_jobs_status(self) -> list[dict]:
    """status.replicatedJobsStatus: per replicatedJob, how many of its current Jobs are each.

    Source: kubernetes-sigs/jobset v0.12.0, jobset_controller.go,
    calculateReplicatedJobStatuses: over the active Jobs (not finished, of
    the current restart attempt) `ready` counts those whose succeeded +
    status.ready pods reach min(parallelism, completions)
    (jobset_rules.job_ready), `active` those with status.active > 0 (pods not
    being deleted: a suspended Job's terminating pods are not active),
    `suspended` those with spec.suspend; `succeeded` and `failed` count the
    finished Jobs.
    """
    with self._lock:
      restarts = self.status.get("restarts", 0)
      out = {r["name"]: dict(name=r["name"], ready=0, succeeded=0, failed=0, active=0, suspended=0)
             for r in self.jobset["spec"]["replicatedJobs"]}
      for job in self.jobs:
        if job.gone_at is not None or job.deleted_at is not None or job.attempt != restarts:
          continue
        counts = out[job.manifest["metadata"]["labels"][jsr.REPLICATED_JOB_NAME_KEY]]
        if job.finished:
          counts["succeeded" if job.finished[0] == "Complete" else "failed"] += 1
          continue
        st = job.controller.status if job.controller else {"ready": 0, "succeeded": 0, "active": 0}
        counts["ready"] += jsr.job_ready(job.manifest, st["ready"], st["succeeded"])
        counts["active"] += st["active"] > 0
        counts["suspended"] += bool(job.manifest["spec"].get("suspend", False))
      return list(out.values())

  def pods(self) -> list:
    """Every pod of every child Job, in creation order."""
    with self._lock:
      return sorted((p for j in self.jobs for p in j.pods()), key=lambda p: p.started_at)

  def describe(self) -> str:
    with self._lock:
      lines = [f"JobSet {self.name}: spec.suspend={self.jobset['spec'].get('suspend', False)} "
               f"status={self.status}"]
      for job in self.jobs:
        lines.append(f" Job {job.name} attempt {job.attempt}: created={job.created_at:.1f} "
                     f"deleted={job.deleted_at} gone={job.gone_at} finished={job.finished}")
        if job.controller:
          lines += ["   " + line for line in job.controller.describe().splitlines()]
      if self.error:
        lines.append(f"error: {self.error!r}")
    return "\n".join(lines)

  # ------------------------------------------------------------ internals

  def _run(self) -> None:
    while not self._stop.wait(0.05):
      with self._lock:
        try:
          self._reconcile()
        except BaseException as e:  # surfaced by wait/wait_for
          self.error = e
          return

  def _reconcile(self) -> None:
    now = time.time()
    listed = []
    for job in self.jobs:
      if job.gone_at is not None:
        continue
      if job.deleted_at is not None and not any(p.live for p in job.pods()):
        job.gone_at = now  # foreground deletion ends with the last pod
        continue
      if job.controller and job.finished is None:
        done = [c["type"] for c in job.controller.status["conditions"] if c["type"] in ("Complete", "Failed")]
        if done:
          job.finished = (done[0], now)
      listed.append(job)
    status, todo = jsr.reconcile(self.jobset, self.status, [j.as_listed() for j in listed], self.uid)
    if status != self.status:
      self.status = status
      self.statuses.append((now, copy.deepcopy(status)))
    by_name = {j.name: j for j in listed}
    for name in todo["delete"]:
      job = by_name[name]
      job.deleted_at = now
      if job.controller:
        # Not `cascade="foreground"`, which blocks: the same pod deletions; the Job
        # stays listed (deletionTimestamp set) until its pods are gone, as above.
        job.controller.delete(cascade="background")
    for manifest in todo["create"]:
      job = ChildJob(manifest, now)
      self.jobs.append(job)
      if not manifest["spec"]["suspend"]:
        self._start(job, now)
    for name in todo["resume"]:
      by_name[name].manifest["spec"]["suspend"] = False
      if by_name[name].controller:  # suspended while it ran: resumeJob
        by_name[name].resumed_at = now
        by_name[name].controller.resume()
      else:
        self._start(by_name[name], now)
    for name in todo["suspend"]:  # suspendJobs
      by_name[name].manifest["spec"]["suspend"] = True
      if by_name[name].controller:
        by_name[name].controller.suspend()

  def _start(self, job: ChildJob, now: float) -> None:
    job.resumed_at = now
    job.controller = JobController(job.manifest, self.launcher(job.manifest), time_scale=self.time_scale,
                                   uid=str(uuid.uuid4()), schedulable=self.schedulable)
    job.controller.start()


# ------------------------------------------------------------------ Kueue


class KueueStandIn:
  """Kueue for JobSets on one LocalQueue and its ClusterQueue (see the module docstring).

  Args:
    cluster_queue, flavors: the ClusterQueue and its ResourceFlavors by name (overlays/kueue).
    local_queue: the LocalQueue (overlays/kueue); JobSets must name it.
    namespace_labels: the labels of the JobSets' namespace.
    wait_for_pods_ready: Kueue's configuration (kueue_rules.WaitForPodsReady: v0.19.2's
      defaults unless given); None turns it off.
    time_scale: multiplies its timeout and requeue back-offs (0.001: 30 min -> 1.8 s);
      the workloads' requeueState records the unscaled count.
  """

  def __init__(self, cluster_queue: dict, flavors: dict, local_queue: dict, namespace_labels: dict,
               wait_for_pods_ready: Optional[kr.WaitForPodsReady] = kr.WaitForPodsReady(),
               time_scale: float = 1.0):
    kr.validate_cluster_queue(cluster_queue)
    self.cluster_queue = cluster_queue
    if local_queue["spec"]["clusterQueue"] != cluster_queue["metadata"]["name"]:
      raise NotImplementedError("a LocalQueue of another ClusterQueue is not simulated")
    self.flavors, self.local_queue, self.namespace_labels = flavors, local_queue, namespace_labels
    self.config, self.time_scale = wait_for_pods_ready, time_scale
    self.usage: dict = {}
    self.usage_history: list[tuple[float, dict]] = [(time.time(), {})]  # every usage, with when
    # Each: name, created, uid, pod_sets, controller, admitted_at (the Admitted condition's time
    # while it holds quota, else None), finished_at, assignment, waiting (why it is pending now),
    # waited (every reason it was pending, in order), conditions ({type: condition}), history
    # (every condition set: (when, type, status, reason)), requeue_state ({count, requeue_at} or
    # None), active (spec.active), evicted_at (for the queue order), admissions (their times).
    self.workloads: list[dict] = []
    self._lock = threading.RLock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name="kueue")
    self._thread.start()

  def submit(self, controller: JobSetController) -> dict:
    """`kubectl apply` of a JobSet: Kueue's webhook suspends it, its Workload is queued, it starts."""
    obj = controller.jobset
    if kr.queue_name(obj) != self.local_queue["metadata"]["name"]:
      raise NotImplementedError(f"queue {kr.queue_name(obj)!r}: only {self.local_queue['metadata']['name']!r}")
    if kr.should_be_suspended(obj):
      obj["spec"]["suspend"] = True
    with self._lock:
      workload = {"name": f"jobset-{controller.name}", "created": time.time(), "uid": controller.uid,
                  "pod_sets": kr.pod_sets(obj), "controller": controller, "admitted_at": None,
                  "finished_at": None, "waiting": None, "waited": [], "assignment": None,
                  "conditions": {}, "history": [], "requeue_state": None, "active": True,
                  "evicted_at": None, "admissions": []}
      self.workloads.append(workload)
    controller.start()
    return workload

  def workload(self, controller: JobSetController) -> dict:
    (wl,) = [w for w in self.workloads if w["controller"] is controller]
    return wl

  def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
    poll_until(self._lock, condition, timeout, self.describe)

  def describe(self) -> str:
    with self._lock:
      lines = [f"usage: {self.usage}"]
      for wl in self.workloads:
        lines.append(f"workload {wl['name']}: active={wl['active']} admitted_at={wl['admitted_at']} "
                     f"requeue_state={wl['requeue_state']} waiting={wl['waiting']}")
        lines += [f"  {t:.2f} {ty}={st} {reason}" for t, ty, st, reason in wl["history"]]
        lines += ["  " + line for line in wl["controller"].describe().splitlines()]
    return "\n".join(lines)

  def stop(self) -> None:
    self._stop.set()
    self._thread.join(timeout=5)

  def _run(self) -> None:
    while not self._stop.wait(0.05):
      with self._lock:
        try:
          self._reconcile()
        except BaseException as e:  # surfaced by every JobSet's wait/wait_for
          for wl in self.workloads:
            wl["controller"].error = e
          return

  @staticmethod
  def _condition(wl: dict, kind: str, status: str, reason: str, now: float) -> None:
    """apimeta.SetStatusCondition: a change of status or reason is recorded in the history."""
    old = wl["conditions"].get(kind)
    if old and (old["status"], old["reason"]) == (status, reason):
      return
    wl["conditions"][kind] = {"type": kind, "status": status, "reason": reason, "lastTransitionTime": now}
    wl["history"].append((now, kind, status, reason))

  @staticmethod
  def _is(wl: dict, kind: str) -> bool:
    return wl["conditions"].get(kind, {}).get("status") == "True"

  def _use(self, usage: dict, now: float) -> None:
    if usage != self.usage:
      self.usage = usage
      self.usage_history.append((now, dict(usage)))

  def _release(self, wl: dict, now: float) -> None:
    usage = dict(self.usage)
    for key, amount in wl["assignment"]["usage"].items():
      usage[key] -= amount
    self._use(usage, now)
    wl["assignment"] = None

  def _reconcile(self) -> None:
    now = time.time()
    for wl in self.workloads:
      if wl["assignment"] is None or wl["finished_at"] is not None:
        continue
      controller = wl["controller"]
      if jsr.finished(controller.status):
        wl["finished_at"] = now
        self._condition(wl, "Finished", "True", "Succeeded" if controller.status["terminalState"] == "Completed"
                        else "Failed", now)
        self._release(wl, now)
        continue
      statuses = controller.replicated_jobs_status()
      if not self._is(wl, "Evicted"):
        self._pods_ready(wl, controller, statuses, now)
      if self._is(wl, "Evicted") and kr.quota_released(True, sum(s["active"] for s in statuses)):
        # reconciler.go step 6: the job is no longer active; clear the admission.
        evicted = wl["conditions"]["Evicted"]["reason"]
        self._release(wl, now)
        wl["admitted_at"] = None
        self._condition(wl, "Requeued", "False", evicted, now)  # setRequeued: only for preemption
        self._condition(wl, "QuotaReserved", "False", "Pending", now)
        self._condition(wl, "Admitted", "False", "NoReservation", now)
        self._condition(wl, "PodsReady", "False", "WaitForStart", now)  # generatePodsReadyCondition
    pending = []
    for wl in self.workloads:
      if wl["assignment"] is not None or wl["finished_at"] is not None or not wl["active"]:
        continue
      state = wl["requeue_state"]
      if state and state["requeue_at"] is not None:
        if now < state["requeue_at"]:
          continue  # workload_controller.go, Reconcile: "Waiting for backoff to finish"
        state["requeue_at"] = None
        self._condition(wl, "Requeued", "True", "BackoffFinished", now)
      pending.append(wl)
    if not pending:
      return
    admitted, usage, waiting = kr.schedule(self.cluster_queue, self.flavors, pending, self.usage,
                                           self.namespace_labels)
    self._use(usage, now)
    for wl in pending:
      wl["waiting"] = waiting.get(wl["name"])
      if wl["waiting"] and wl["waiting"] not in wl["waited"]:
        wl["waited"].append(wl["waiting"])
    for wl, assignment in admitted:
      wl["admitted_at"], wl["assignment"] = now, assignment
      wl["admissions"].append(now)
      self._condition(wl, "QuotaReserved", "True", "QuotaReserved", now)
      self._condition(wl, "Admitted", "True", "Admitted", now)
      if "Evicted" in wl["conditions"]:  # workload.go, SetQuotaReservation: resetActiveCondition
        self._condition(wl, "Evicted", "False", "QuotaReserved", now)
      if not kr.stays_suspended(admitted=True):
        wl["controller"].resume()

  def _pods_ready(self, wl: dict, controller: JobSetController, statuses: list, now: float) -> None:
    """PodsReady (reconciler.go step 5) and the waitForPodsReady timeout (module docstring)."""
    if self.config is None:
      return
    if kr.jobset_pods_ready(controller.jobset, statuses):
      self._condition(wl, "PodsReady", "True", "Started", now)
      return
    if self._is(wl, "PodsReady"):
      return  # recoveryTimeout (WaitForRecovery) is not simulated
    self._condition(wl, "PodsReady", "False", "WaitForStart", now)
    if now - wl["admitted_at"] < self.config.timeout_s * self.time_scale:  # admittedNotReadyWorkload
      return
    count = (wl["requeue_state"] or {}).get("count", 0)
    verdict = kr.on_pods_ready_timeout(count, now, self.config)
    if verdict["action"] == "Deactivated":
      # triggerDeactivation, then Reconcile: spec.active false and the eviction (reason with cause).
      self._condition(wl, "DeactivationTarget", "True", verdict["reason"], now)
      wl["active"], wl["requeue_state"] = False, None
      del wl["conditions"]["DeactivationTarget"]
      self._condition(wl, "Evicted", "True", f"DeactivatedDueTo{verdict['reason']}", now)
    else:
      wl["requeue_state"] = {"count": verdict["count"],
                             "requeue_at": now + (verdict["requeue_at"] - now) * self.time_scale}
      wl["evicted_at"] = now
      self._condition(wl, "Evicted", "True", verdict["reason"], now)
    controller.suspend()  # reconciler.go step 6, stopJob
