"""Kueue's admission rules for a Job or a JobSet, one small pure function each, citing its source.

Source: kubernetes-sigs/kueue at tag v0.19.2 (commit
8eab68778fc1b52affe165fdf5af29d1e9b4f3cb, the release tests/crds/ holds; `KUEUE`
below): pkg/controller/jobframework/ (utils.go, reconciler.go),
pkg/controller/jobs/job/ and jobs/jobset/ (job_controller.go,
jobset_controller.go), pkg/workload/ (workload.go, resources.go),
pkg/scheduler/ (scheduler.go, flavorassigner/flavorassigner.go and
podset_reducer.go), pkg/cache/scheduler/ (clusterqueue_snapshot.go,
resource_node.go), pkg/cache/queue/cluster_queue.go,
pkg/controller/core/ (workload_controller.go, core.go), pkg/util/wait/backoff.go
and apis/config/v1beta2/defaults.go (the configuration v0.19.2's manifests
install: config/components/manager/controller_manager_config.yaml). Feature
gates hold their v0.19.2 defaults (pkg/features/kube_features.go:
PartialAdmission on).

What is modelled: which Job or JobSet Kueue holds suspended; the workload's pod
sets and their requests (limits standing in for missing requests); admission of a
whole workload when every requested resource fits a flavor's nominalQuota minus
what admitted workloads use, and partial admission only where a pod set has a
minCount; the queue order (priority, then creation or eviction time) and
BestEffortFIFO/StrictFIFO; waitForPodsReady (the timeout from admission,
eviction, requeue back-off, deactivation after backoffLimitCount); when an
evicted workload's quota is released. What is not: cohorts, borrowing and
lending, preemption, fair sharing, admission checks, topology-aware
scheduling, LimitRanges, pod overhead, init containers, DRA, flavor taints,
node affinity beyond nodeSelector, reclaimable pods (quota is held until the
workload finishes: stricter than Kueue, never kinder), MultiKueue and the
configuration's blockAdmission: `validate_cluster_queue` and the functions
below raise NotImplementedError where one is used.
"""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction
from typing import Callable, Optional

KUEUE = "https://github.com/kubernetes-sigs/kueue/blob/v0.19.2/"

QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"  # pkg/controller/constants/constants.go, QueueLabel
# pkg/controller/jobs/job/job_controller.go, JobMinParallelismAnnotation.
JOB_MIN_PARALLELISM_ANNOTATION = "kueue.x-k8s.io/job-min-parallelism"

# apis/config/v1beta2/defaults.go.
DEFAULT_WAIT_FOR_PODS_READY_TIMEOUT_S = 30 * 60  # DefaultWaitForPodsReadyTimeout
DEFAULT_BACKOFF_BASE_S = 60  # DefaultRequeuingBackoffBaseSeconds
DEFAULT_BACKOFF_MAX_S = 3600  # DefaultRequeuingBackoffMaxSeconds
REQUEUE_JITTER = 0.0001  # pkg/controller/core/core.go, waitForPodsReady: requeuingBackoffJitter

# apis/kueue/v1beta2/workload_types.go: reasons.
PODS_READY_TIMEOUT = "PodsReadyTimeout"  # WorkloadEvictedByPodsReadyTimeout
REQUEUING_LIMIT_EXCEEDED = "RequeuingLimitExceeded"  # WorkloadRequeuingLimitExceeded
WAITING_FOR_QUOTA = "WaitingForQuota"  # WorkloadQuotaReservedReasonWaitingForQuota
EXCEEDS_MAX_QUOTA = "ExceedsMaxQuota"  # WorkloadQuotaReservedReasonExceedsMaxQuota
NO_MATCHING_FLAVOR = "NoMatchingFlavor"  # WorkloadQuotaReservedReasonNoMatchingFlavor
# pkg/workload/resources.go, ErrNamespaceMismatch.
NAMESPACE_MISMATCH = "workload namespace doesn't match ClusterQueue selector"

# ClusterQueue spec fields simulated (apis/kueue/v1beta2/clusterqueue_types.go); the
# others only at their defaults.
_CQ_SIMULATED = {"resourceGroups", "namespaceSelector", "queueingStrategy"}
_CQ_DEFAULTS = {"preemption": {"withinClusterQueue": "Never", "reclaimWithinCohort": "Never"},
                "stopPolicy": "None"}


# ------------------------------------------------------------------ configuration


@dataclasses.dataclass(frozen=True)
class WaitForPodsReady:
  """Kueue's waitForPodsReady configuration, defaulted as v0.19.2 does.

  Source: apis/config/v1beta2/defaults.go, SetDefaults_Configuration: on in
  every v1beta2 configuration (pkg/util/waitforpodsready, Enabled: the
  configuration is never nil after defaulting), timeout 30 min,
  recoveryTimeout the timeout, blockAdmission false, requeuingStrategy
  timestamp Eviction, backoffBaseSeconds 60, backoffMaxSeconds 3600,
  backoffLimitCount none (requeued forever).
  """
  timeout_s: float = DEFAULT_WAIT_FOR_PODS_READY_TIMEOUT_S
  backoff_base_s: int = DEFAULT_BACKOFF_BASE_S
  backoff_max_s: int = DEFAULT_BACKOFF_MAX_S
  backoff_limit_count: Optional[int] = None
  block_admission: bool = False

  @classmethod
  def from_config(cls, config: Optional[dict]) -> "WaitForPodsReady":
    """From the `waitForPodsReady` map of a config.kueue.x-k8s.io/v1beta2 Configuration."""
    config = config or {}
    strategy = config.get("requeuingStrategy") or {}
    if strategy.get("timestamp", "Eviction") != "Eviction":
      raise NotImplementedError("requeuingStrategy.timestamp: only Eviction is simulated")
    if config.get("blockAdmission"):
      raise NotImplementedError("waitForPodsReady.blockAdmission is not simulated")
    # A zero timeout takes the default; the back-off fields are pointers, so only an unset one does
    # (cmp.Or). A backoffMaxSeconds of 0 leaves the back-off uncapped (pkg/util/wait/backoff.go, NewBackoff).
    base, cap = strategy.get("backoffBaseSeconds"), strategy.get("backoffMaxSeconds")
    return cls(timeout_s=_duration_s(config.get("timeout")) or DEFAULT_WAIT_FOR_PODS_READY_TIMEOUT_S,
               backoff_base_s=DEFAULT_BACKOFF_BASE_S if base is None else base,
               backoff_max_s=DEFAULT_BACKOFF_MAX_S if cap is None else cap,
               backoff_limit_count=strategy.get("backoffLimitCount"))


def _duration_s(text: Optional[str]) -> float:
  """A metav1.Duration's seconds (Go's time.ParseDuration); only the h, m and s units are simulated."""
  if not text:
    return 0.0
  parts = re.findall(r"(\d+(?:\.\d+)?)([a-zµ]+)", text)
  if "".join(n + u for n, u in parts) != text or any(u not in ("h", "m", "s") for _, u in parts):
    raise NotImplementedError(f"duration {text!r}: only h, m and s units are simulated")
  return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


# ------------------------------------------------------------------ which objects are queued


def queue_name(obj: dict) -> str:
  """The LocalQueue an object names: its kueue.x-k8s.io/queue-name label, else "".

  Source: pkg/controller/jobframework/utils.go, QueueNameForObject (the label
  only).
  """
  return (obj["metadata"].get("labels") or {}).get(QUEUE_NAME_LABEL, "")


def should_be_suspended(obj: dict, ancestor_managed: bool = False,
                        manage_jobs_without_queue_name: bool = False) -> bool:
  """Whether Kueue's webhook creates a Job or JobSet suspended (and it stays so until admitted).

  Source: pkg/controller/jobframework/utils.go, WorkloadShouldBeSuspended,
  called by the Job and JobSet webhooks' Default: not when an ancestor (a
  JobSet, for its child Jobs) is already managed by Kueue; yes with a queue
  name; without one only under manageJobsWithoutQueueName (its namespace
  selector is not modelled: NotImplementedError).
  """
  if ancestor_managed:
    return False
  if queue_name(obj):
    return True
  if manage_jobs_without_queue_name:
    raise NotImplementedError("manageJobsWithoutQueueName's managedJobsNamespaceSelector is not simulated")
  return False


def stays_suspended(admitted: bool) -> bool:
  """A managed Job or JobSet is suspended while its workload is not admitted, and unsuspended once it is.

  Source: pkg/controller/jobframework/reconciler.go, ReconcileGenericJob:
  step 7 starts a suspended job whose workload is admitted (startJob); step 8
  suspends a running one whose workload is not (stopJob, StopReasonNotAdmitted).
  """
  return not admitted


# ------------------------------------------------------------------ quantities and requests


_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 1000), "": 1,
            "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}


def parse_quantity(value) -> Fraction:
  """A Kubernetes resource.Quantity, exactly ("3", "500m", "11Gi", "1e3").

  Source: kubernetes/apimachinery pkg/api/resource/quantity.go, ParseQuantity
  (binary suffixes, decimal suffixes, decimal exponents).
  """
  text = str(value).strip()
  for suffix, factor in _BINARY.items():
    if text.endswith(suffix):
      return Fraction(text[:-len(suffix)]) * factor
  lower = text.lower()
  if "e" in lower and lower[-1].isdigit():
    mantissa, exponent = lower.split("e")
    return Fraction(mantissa) * Fraction(10) ** int(exponent)
  suffix = text[-1] if text[-1] in _DECIMAL and not text[-1].isdigit() else ""
  return Fraction(text[:len(text) - len(suffix)]) * _DECIMAL[suffix]


def resource_value(name: str, quantity) -> int:
  """The integer Kueue accounts a resource in: CPU in millicores, the rest in units, rounded up.

  Source: pkg/resources/requests.go, ResourceValue (MilliValue for cpu,
  Value otherwise; Quantity.Value rounds up).
  """
  amount = parse_quantity(quantity) * (1000 if name == "cpu" else 1)
  return math.ceil(amount)


def pod_requests(pod_spec: dict) -> dict[str, int]:
  """One pod's requests as Kueue counts them: each container's requests, its limits where unset, summed.

  Source: pkg/workload/resources.go, AdjustResources and
  UseLimitsAsMissingRequestsInPod (MergeResourceListKeepFirst), then
  totalRequestsFromPodSets (resourcehelpers.PodRequests). Init containers,
  pod overhead, pod-level resources and LimitRange defaults are not simulated.
  """
  for field in ("initContainers", "overhead", "resources", "runtimeClassName"):
    if pod_spec.get(field):
      raise NotImplementedError(f"pod spec field {field!r} is not simulated")
  total: dict[str, int] = {}
  for container in pod_spec["containers"]:
    resources = container.get("resources") or {}
    requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    for name, quantity in requests.items():
      total[name] = total.get(name, 0) + resource_value(name, quantity)
  return total


def request_errors(pod_spec: dict) -> list[str]:
  """Containers requesting more than their limit: such a workload is never admitted.

  Source: pkg/workload/resources.go, ValidateResources (RequestsMustNotExceedLimitMessage),
  checked in ValidateAdmissibility.
  """
  errors = []
  for i, container in enumerate(pod_spec["containers"]):
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    over = sorted(n for n, q in (resources.get("requests") or {}).items()
                  if n in limits and resource_value(n, q) > resource_value(n, limits[n]))
    if over:
      errors.append(f"containers[{i}]: {over}: resource requests must not exceed limits")
  return errors


def pod_sets(obj: dict) -> list[dict]:
  """The workload's pod sets: name, count, minCount (None: all or nothing) and the pod template.

  Source: pkg/controller/jobs/job/job_controller.go, PodSets, podsCount
  (min(parallelism, completions)) and minPodsCount (the
  kueue.x-k8s.io/job-min-parallelism annotation); jobs/jobset/jobset_controller.go,
  PodSets and podsCount (one pod set per replicatedJob, replicas x
  min(parallelism, completions), never a minCount). A JobSet's child Jobs are
  no workloads of their own.
  """
  if obj["kind"] == "Job":
    spec = obj["spec"]
    count = min(spec.get("parallelism", 1), spec.get("completions", spec.get("parallelism", 1)))
    minimum = (obj["metadata"].get("annotations") or {}).get(JOB_MIN_PARALLELISM_ANNOTATION)
    return [{"name": "main", "count": count, "minCount": int(minimum) if minimum is not None else None,
             "template": spec["template"]}]
  if obj["kind"] == "JobSet":
    sets = []
    for rjob in obj["spec"]["replicatedJobs"]:
      spec = rjob["template"]["spec"]
      per_job = min(spec.get("parallelism", 1), spec.get("completions", spec.get("parallelism", 1)))
      sets.append({"name": rjob["name"], "count": rjob.get("replicas", 1) * per_job, "minCount": None,
                   "template": spec["template"]})
    return sets
  raise NotImplementedError(f"kind {obj['kind']} is not simulated")


def total_requests(sets: list[dict], counts: Optional[list[int]] = None) -> list[dict[str, int]]:
  """Each pod set's requests for all its pods: one pod's requests times the count.

  Source: pkg/workload/workload.go, totalRequestsFromPodSets (Requests.Mul(count))
  and PodSetResources.ScaledTo for a partial count.
  """
  counts = counts or [s["count"] for s in sets]
  return [{n: v * c for n, v in pod_requests(s["template"]["spec"]).items()} for s, c in zip(sets, counts)]


def can_be_partially_admitted(sets: list[dict]) -> bool:
  """Whether any pod set may be admitted with fewer pods (minCount below count).

  Source: pkg/workload/workload.go, CanBePartiallyAdmitted.
  """
  return any(s["minCount"] is not None and s["count"] > s["minCount"] for s in sets)


# ------------------------------------------------------------------ the ClusterQueue


def validate_cluster_queue(cluster_queue: dict) -> dict:
  """The ClusterQueue's spec, or NotImplementedError for a field not simulated (cohorts, preemption, ...)."""
  spec = cluster_queue["spec"]
  for field, value in spec.items():
    if field not in _CQ_SIMULATED and _CQ_DEFAULTS.get(field, object()) != value:
      raise NotImplementedError(f"ClusterQueue spec field {field!r} is not simulated")
  for group in spec["resourceGroups"]:
    for flavor in group["flavors"]:
      for resource in flavor["resources"]:
        if set(resource) - {"name", "nominalQuota"}:
          raise NotImplementedError("borrowingLimit and lendingLimit are not simulated")
  return spec


def namespace_admitted(cluster_queue: dict, namespace_labels: dict) -> bool:
  """Whether the ClusterQueue's namespaceSelector admits the workload's namespace.

  Source: pkg/workload/resources.go, ValidateAdmissibility (ErrNamespaceMismatch:
  the workload stays pending). Only matchLabels is simulated; a nil selector
  admits every namespace.
  """
  selector = cluster_queue["spec"].get("namespaceSelector")
  if selector is None:
    return True
  if set(selector) - {"matchLabels"}:
    raise NotImplementedError("namespaceSelector: only matchLabels is simulated")
  return (selector.get("matchLabels") or {}).items() <= namespace_labels.items()


def nominal_quota(cluster_queue: dict) -> dict[tuple[str, str], int]:
  """{(flavor, resource): nominalQuota} in ResourceValue units."""
  return {(f["name"], r["name"]): resource_value(r["name"], r["nominalQuota"])
          for g in validate_cluster_queue(cluster_queue)["resourceGroups"]
          for f in g["flavors"] for r in f["resources"]}


def flavor_mismatch(pod_spec: dict, flavor: dict) -> Optional[str]:
  """Why a ResourceFlavor cannot take this pod, or None if it can.

  Source: pkg/scheduler/flavorassigner/flavorassigner.go, checkFlavorForPodSets
  and flavorSelector: the pod's nodeSelector, restricted to the keys of the
  flavor's nodeLabels, must match them. Flavor taints and tolerations and
  required node affinity are not simulated.
  """
  fspec = flavor.get("spec") or {}
  if fspec.get("nodeTaints") or fspec.get("tolerations") or fspec.get("topologyName"):
    raise NotImplementedError("flavor nodeTaints, tolerations and topologies are not simulated")
  if ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution"):
    raise NotImplementedError("required node affinity is not simulated")
  labels = fspec.get("nodeLabels") or {}
  selector = {k: v for k, v in (pod_spec.get("nodeSelector") or {}).items() if k in labels}
  if any(labels[k] != v for k, v in selector.items()):
    return f"flavor {flavor['metadata']['name']} doesn't match node affinity"
  return None


def fits_quota(nominal: int, used: int, request: int) -> tuple[str, Optional[str]]:
  """("Fit", None), or why not: more than the quota could ever hold, or more than is unused now.

  Source: flavorassigner.go, fitsResourceQuota, for a ClusterQueue in no
  cohort (clusterqueue_snapshot.go, Available and PotentialAvailable;
  resource_node.go, available: nominalQuota minus usage). Over the nominal
  quota: NoFit, ExceedsMaxQuota. Within it but over what is unused: the
  workload waits (preemption, withinClusterQueue Never by default, finds no
  candidate: scheduler.go, processEntry, RequeueReasonPreemptionNoCandidates).
  """
  if request > nominal:
    return EXCEEDS_MAX_QUOTA, f"request ({request}) > maximum capacity ({nominal})"
  if request > nominal - used:
    return WAITING_FOR_QUOTA, f"insufficient unused quota, {request - (nominal - used)} more needed"
  return "Fit", None


def assign_flavors(cluster_queue: dict, flavors: dict[str, dict], sets: list[dict],
                   usage: dict[tuple[str, str], int], counts: Optional[list[int]] = None) -> dict:
  """A flavor for every requested resource of every pod set, or why the workload does not fit.

  Source: flavorassigner.go, assignFlavors and findFlavorForPodSets: a
  requested resource no resourceGroup covers fails the workload ("resource X
  unavailable in ClusterQueue"; a zero request is skipped); the flavors of the
  resource's group are tried in order, a flavor fitting only if the pod's
  nodeSelector matches it and every requested resource of the group fits its
  quota, counting what earlier pod sets of this workload take
  (fitsResourceQuota's assumedUsage). Returns {"mode": "Fit" or a reason,
  "flavors": [{resource: flavor}], "usage": {(flavor, resource): amount},
  "message": str}.
  """
  spec = validate_cluster_queue(cluster_queue)
  quota = nominal_quota(cluster_queue)
  requests = total_requests(sets, counts)
  assigned_usage: dict[tuple[str, str], int] = {}
  chosen = []
  for ps, request in zip(sets, requests):
    pod_spec = ps["template"]["spec"]
    flavors_for_set: dict[str, str] = {}
    for resource, amount in request.items():
      if resource in flavors_for_set:
        continue
      group = next((g for g in spec["resourceGroups"] if resource in g["coveredResources"]), None)
      if group is None:
        if amount == 0:
          continue
        return {"mode": NO_MATCHING_FLAVOR, "message": f"resource {resource} unavailable in ClusterQueue"}
      wanted = {r: a for r, a in request.items() if r in group["coveredResources"]}
      reasons = []
      for fl in group["flavors"]:
        mismatch = flavor_mismatch(pod_spec, flavors[fl["name"]])
        if mismatch:
          reasons.append((NO_MATCHING_FLAVOR, mismatch))
          continue
        verdicts = [(r, fits_quota(quota.get((fl["name"], r), 0), usage.get((fl["name"], r), 0),
                                   assigned_usage.get((fl["name"], r), 0) + a)) for r, a in wanted.items()]
        misses = [(mode, f"{r} in flavor {fl['name']}: {why}") for r, (mode, why) in verdicts if mode != "Fit"]
        if not misses:
          for r, a in wanted.items():
            flavors_for_set[r] = fl["name"]
            assigned_usage[(fl["name"], r)] = assigned_usage.get((fl["name"], r), 0) + a
          break
        reasons += misses
      else:
        mode = EXCEEDS_MAX_QUOTA if all(m == EXCEEDS_MAX_QUOTA for m, _ in reasons) else (
            WAITING_FOR_QUOTA if any(m == WAITING_FOR_QUOTA for m, _ in reasons) else NO_MATCHING_FLAVOR)
        return {"mode": mode, "message": "; ".join(why for _, why in reasons)}
    chosen.append(flavors_for_set)
  return {"mode": "Fit", "flavors": chosen, "usage": assigned_usage, "message": ""}


def pod_set_reducer_search(counts: list[int], min_counts: list[Optional[int]],
                           fits: Callable[[list[int]], bool]) -> Optional[list[int]]:
  """The largest pod counts, stepped down together towards minCount, that fit; None if none does.

  Source: flavorassigner/podset_reducer.go, NewPodSetReducer, Search and
  fillPodSetSizesForSearchIndex: a binary search (Go's sort.Search) over
  i in [0, totalDelta], counts[j] - delta[j] * i / totalDelta (integer division).
  """
  deltas = [c - (c if m is None else m) for c, m in zip(counts, min_counts)]
  total = sum(deltas)
  if total == 0:
    return None
  sizes = lambda i: [c - d * i // total for c, d in zip(counts, deltas)]
  last_good, best = 0, None
  lo, hi = 0, total + 1
  while lo < hi:  # sort.Search
    mid = (lo + hi) // 2
    if fits(sizes(mid)):
      last_good, best, hi = mid, sizes(mid), mid
    else:
      lo = mid + 1
  return best if lo == last_good else None


def assign(cluster_queue: dict, flavors: dict[str, dict], sets: list[dict],
           usage: dict[tuple[str, str], int], partial_admission: bool = True) -> dict:
  """The whole workload's assignment if it fits, else a partial one where minCount allows, else why not.

  Source: pkg/scheduler/scheduler.go, getInitialAssignments: the full counts
  first; then, with the PartialAdmission gate (on by default since v0.5) and
  a pod set whose minCount is below its count, pod_set_reducer_search. The
  assignment's "counts" are what the job is started with (a Job's
  parallelism is set to it: job_controller.go, RunWithPodSetsInfo).
  """
  for ps in sets:
    errors = request_errors(ps["template"]["spec"])
    if errors:
      return {"mode": "Invalid", "message": "; ".join(errors)}
  full = assign_flavors(cluster_queue, flavors, sets, usage)
  if full["mode"] == "Fit" or not (partial_admission and can_be_partially_admitted(sets)):
    return {**full, "counts": [s["count"] for s in sets]}
  found = {}

  def fits(counts):
    found[tuple(counts)] = assign_flavors(cluster_queue, flavors, sets, usage, counts)
    return found[tuple(counts)]["mode"] == "Fit"

  counts = pod_set_reducer_search([s["count"] for s in sets], [s["minCount"] for s in sets], fits)
  if counts is None:
    return {**full, "counts": [s["count"] for s in sets]}
  return {**found[tuple(counts)], "counts": counts}


# ------------------------------------------------------------------ the queue


def queue_order(workloads: list[dict]) -> list[dict]:
  """Pending workloads in the order the ClusterQueue offers them: priority, then time, then UID.

  Source: pkg/cache/queue/cluster_queue.go, baseCompareFunc (higher priority
  first, then the earlier GetQueueOrderTimestamp, then UID);
  pkg/workload/workload.go, Ordering.GetQueueOrderTimestamp (with
  requeuingStrategy.timestamp Eviction a workload evicted by the PodsReady
  timeout is ordered by its eviction time, else by its creation time). Each
  workload is {"name", "priority", "created", "evicted_at" (or None), "uid", ...}.
  """
  def timestamp(w):
    return w["created"] if w.get("evicted_at") is None else w["evicted_at"]
  return sorted(workloads, key=lambda w: (-w.get("priority", 0), timestamp(w), w.get("uid", w["name"])))


def schedule(cluster_queue: dict, flavors: dict[str, dict], pending: list[dict],
             usage: dict[tuple[str, str], int], namespace_labels: dict) -> tuple[list, dict, dict[str, str]]:
  """Scheduling cycles until none admits more: what is admitted, the new usage, and why the rest waits.

  Source: pkg/scheduler/scheduler.go, schedule, nominate and processEntry:
  each cycle takes the ClusterQueue's head (queue_order), admits it if its
  assignment fits (usage added at once: assumeWorkload), else leaves it
  pending: under BestEffortFIFO (the default) the next workload is tried in
  the next cycle; under StrictFIFO the head blocks the queue. A workload whose
  namespace the ClusterQueue does not select is never admitted. A workload
  whose requeue back-off has not passed is not in the queue (the caller
  leaves it out). Each pending workload is a dict as in queue_order with
  "pod_sets" (from pod_sets). Returns ([(workload, assignment)], usage,
  {name: why}).
  """
  strict = cluster_queue["spec"].get("queueingStrategy", "BestEffortFIFO") == "StrictFIFO"
  usage = dict(usage)
  admitted, waiting = [], {}
  for wl in queue_order(pending):
    if not namespace_admitted(cluster_queue, namespace_labels):
      waiting[wl["name"]] = NAMESPACE_MISMATCH
      continue
    assignment = assign(cluster_queue, flavors, wl["pod_sets"], usage)
    if assignment["mode"] != "Fit":
      waiting[wl["name"]] = f"{assignment['mode']}: {assignment['message']}"
      if strict:
        break
      continue
    for key, amount in assignment["usage"].items():
      usage[key] = usage.get(key, 0) + amount
    admitted.append((wl, assignment))
  return admitted, usage, waiting


# ------------------------------------------------------------------ waitForPodsReady


def job_pods_ready(ready: int, succeeded: int, count: int) -> bool:
  """A Job's workload is PodsReady once ready + succeeded pods reach its pod count.

  Source: pkg/controller/jobs/job/job_controller.go, PodsReady.
  """
  return succeeded + ready >= count


def jobset_pods_ready(jobset: dict, replicated_jobs_status: list[dict]) -> bool:
  """A JobSet's workload is PodsReady once every child Job is ready or succeeded.

  Source: pkg/controller/jobs/jobset/jobset_controller.go, PodsReady (the
  JobSet controller counts a Job ready when succeeded + ready pods reach
  min(parallelism, completions): jobset_controller.go,
  calculateReplicatedJobStatuses).
  """
  replicas = sum(r.get("replicas", 1) for r in jobset["spec"]["replicatedJobs"])
  return sum(s.get("ready", 0) + s.get("succeeded", 0) for s in replicated_jobs_status) == replicas


def pods_ready_remaining_s(admitted_at: float, now: float, config: WaitForPodsReady) -> float:
  """Seconds left before an admitted workload that is not PodsReady is evicted (0: now).

  Source: pkg/controller/core/workload_controller.go, admittedNotReadyWorkload:
  measured from the Admitted condition's transition (reason WaitForStart; the
  recoveryTimeout, for a running workload that loses a pod, is not simulated).
  """
  return max(config.timeout_s - (now - admitted_at), 0.0)


def requeue_wait_s(count: int, config: WaitForPodsReady) -> float:
  """The back-off before the `count`-th requeue, without its jitter: base * 2^(count-1), at most max.

  Source: pkg/workload/workload.go, UpdateRequeueState (wait.NewBackoff(base,
  max, factor 2, jitter 0.0001).WaitTime(count)); pkg/util/wait/backoff.go,
  WaitTime (Step `count` times); k8s.io/apimachinery wait.Backoff.Step (the
  first step returns base; each doubles the next, which is capped at max). The
  real wait adds up to REQUEUE_JITTER of it (wait.Jitter): it lies in
  [w, w * (1 + REQUEUE_JITTER)).
  """
  cap = config.backoff_max_s or math.inf
  duration = wait = float(config.backoff_base_s)
  for _ in range(count):
    wait = duration
    duration = min(duration * 2, cap)
  return wait


def on_pods_ready_timeout(requeue_count: int, now: float, config: WaitForPodsReady) -> dict:
  """What the workload controller does when the PodsReady timeout passes.

  Source: pkg/controller/core/workload_controller.go, reconcileNotReadyTimeout
  and triggerDeactivation: with backoffLimitCount set and requeue_count + 1
  above it, the workload is deactivated (DeactivationTarget, reason
  RequeuingLimitExceeded; spec.active false: never requeued). Otherwise
  evicted (reason PodsReadyTimeout) with requeueState.count + 1 and
  requeueAt = now + requeue_wait_s (pkg/workload/workload.go,
  UpdateRequeueState). Either way the job is stopped: suspended, its pods
  deleted (pkg/controller/jobframework/reconciler.go, stopJob).
  """
  limit = config.backoff_limit_count
  if limit is not None and requeue_count + 1 > limit:
    return {"action": "Deactivated", "reason": REQUEUING_LIMIT_EXCEEDED, "count": requeue_count,
            "requeue_at": None}
  count = requeue_count + 1
  return {"action": "Evicted", "reason": PODS_READY_TIMEOUT, "count": count,
          "requeue_at": now + requeue_wait_s(count, config)}


def quota_released(evicted: bool, job_active_pods: int) -> bool:
  """An evicted workload gives its quota back only once its job has no active pod left.

  Source: pkg/controller/jobframework/reconciler.go, ReconcileGenericJob step 6:
  the job is stopped, and the quota reservation is unset only when
  `!job.IsActive()` (a Job's status.active is 0; a JobSet's replicatedJobs
  have no active Job: jobs/job and jobs/jobset IsActive). A Job's
  status.active leaves out pods being deleted (kubernetes
  pkg/controller/job/job_controller.go, syncJob: controller.FilterActivePods),
  so the quota goes back once the stopped job's pods are marked deleted, not
  once they have ended: a pod in its grace period still holds its node.
  """
  return evicted and job_active_pods == 0
