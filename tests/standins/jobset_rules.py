"""The JobSet controller's rules, one small pure function each, citing its source.

Source: kubernetes-sigs/jobset at tag v0.12.0 (commit
f22e565ac3cc3265c7c45ef67ecffdc689af5d77, the release tests/crds/ holds; `JOBSET`
below): pkg/controllers/jobset_controller.go, failure_policy.go and
success_policy.go, pkg/webhooks/jobset_webhook.go, pkg/util/placement/placement.go,
pkg/constants/constants.go and api/jobset/v1alpha2/jobset_types.go. Feature gates
hold their v0.12.0 defaults (pkg/features/features.go: RestartJob, InPlaceRestart
and ElasticJobSet off).

What is modelled: the child Jobs JobSet makes (names, labels, annotations,
subdomain, suspend), their host names, the failure policy (rule order,
onJobFailureReasons, onJobFailureMessagePatterns, targetReplicatedJobs, the three
JobSet-wide actions, the default action, maxRestarts), a restart (every child Job
deleted, succeeded ones included, and recreated with the next restart attempt;
BlockingRecreate), the success policy, and the order `reconcile` does them in.
A JobSet is a dict as read from YAML; a child Job is a batch/v1 Job dict whose
`status.conditions` the caller sets (the Job controller's side:
standins.job_rules). What is not: pods, the headless Service object, events,
metrics, TTL, startupPolicy InOrder, dependsOn, coordinator, volumeClaimPolicies,
the in-place restart, elastic scaling and the feature-gated RestartJob actions:
`validate` refuses a JobSet that uses one (NotImplementedError), and one JobSet's
webhook would refuse (InvalidJobSet), so the stand-in is never kinder than JobSet.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Optional

JOBSET = "https://github.com/kubernetes-sigs/jobset/blob/v0.12.0/"

# api/jobset/v1alpha2/jobset_types.go and pkg/constants/constants.go: the labels and
# annotations JobSet puts on its child Jobs and their pod templates.
JOBSET_NAME_KEY = "jobset.sigs.k8s.io/jobset-name"
JOBSET_UID_KEY = "jobset.sigs.k8s.io/jobset-uid"
REPLICATED_JOB_NAME_KEY = "jobset.sigs.k8s.io/replicatedjob-name"
REPLICATED_JOB_REPLICAS_KEY = "jobset.sigs.k8s.io/replicatedjob-replicas"
GLOBAL_REPLICAS_KEY = "jobset.sigs.k8s.io/global-replicas"
JOB_INDEX_KEY = "jobset.sigs.k8s.io/job-index"
JOB_GLOBAL_INDEX_KEY = "jobset.sigs.k8s.io/job-global-index"
JOB_KEY = "jobset.sigs.k8s.io/job-key"
GROUP_NAME_KEY = "jobset.sigs.k8s.io/group-name"
GROUP_REPLICAS_KEY = "jobset.sigs.k8s.io/group-replicas"
JOB_GROUP_INDEX_KEY = "jobset.sigs.k8s.io/job-group-index"
RESTARTS_KEY = "jobset.sigs.k8s.io/restart-attempt"  # constants.go, RestartsKey

# api/jobset/v1alpha2/jobset_types.go, FailurePolicyAction.
FAIL_JOBSET, RESTART_JOBSET = "FailJobSet", "RestartJobSet"
RESTART_JOBSET_IGNORE_MAX = "RestartJobSetAndIgnoreMaxRestarts"
RESTART_JOB, RESTART_JOB_IGNORE_MAX = "RestartJob", "RestartJobAndIgnoreMaxRestarts"
# failure_policy.go, defaultFailurePolicyRuleAction.
DEFAULT_ACTION = RESTART_JOBSET

# pkg/constants/constants.go: condition reasons and messages.
REACHED_MAX_RESTARTS = ("ReachedMaxRestarts", "jobset failed due to reaching max number of restarts")
FAILED_JOBS = ("FailedJobs", "jobset failed due to one or more job failures")
FAIL_JOBSET_ACTION = ("FailJobSetFailurePolicyAction", "applying FailJobSet failure policy action")
RESTART_JOBSET_MESSAGE = "applying RestartJobSet failure policy action"
RESTART_JOBSET_IGNORE_MAX_MESSAGE = "applying RestartJobSetAndIgnoreMaxRestarts failure policy action"
ALL_JOBS_COMPLETED = ("AllJobsCompleted", "jobset completed successfully")
RESTARTING_DEFAULT_POLICY = "DefaultFailurePolicy"
RESTARTING_RULE_FORMAT = "FailurePolicy_{}"  # RestartingJobSetReasonFailurePolicyFormat

# pkg/webhooks/jobset_webhook.go: validOnJobFailureReasons, ruleNameFmt, defaultRuleNameFmt.
VALID_JOB_FAILURE_REASONS = ("BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes",
                             "MaxFailedIndexesExceeded", "PodFailurePolicy")
_RULE_NAME = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_NOT_SIMULATED = ("startupPolicy", "coordinator", "volumeClaimPolicies", "ttlSecondsAfterFinished")


class InvalidJobSet(ValueError):
  """A JobSet JobSet's validating webhook would refuse."""


# ------------------------------------------------------------------ the object


def defaulted(jobset: dict) -> dict:
  """The JobSet as stored: the CRD's and the mutating webhook's defaults applied.

  Source: pkg/webhooks/jobset_webhook.go, Default (successPolicy All,
  completionMode Indexed, restartPolicy OnFailure, network.enableDNSHostnames
  and publishNotReadyAddresses true, rule names failurePolicyRule<i>) and the
  kubebuilder defaults of api/jobset/v1alpha2/jobset_types.go (replicas 1,
  groupName "default", restartStrategy Recreate).
  """
  js = copy.deepcopy(jobset)
  spec = js["spec"]
  spec.setdefault("successPolicy", {"operator": "All"})
  for rjob in spec["replicatedJobs"]:
    rjob.setdefault("replicas", 1)
    rjob.setdefault("groupName", "default")
    job_spec = rjob["template"]["spec"]
    job_spec.setdefault("completionMode", "Indexed")
    job_spec["template"].setdefault("spec", {}).setdefault("restartPolicy", "OnFailure")
  network = spec.setdefault("network", {})
  network.setdefault("enableDNSHostnames", True)
  network.setdefault("publishNotReadyAddresses", True)
  policy = spec.get("failurePolicy")
  if policy is not None:
    policy.setdefault("restartStrategy", "Recreate")
    for i, rule in enumerate(policy.get("rules", [])):
      rule.setdefault("name", f"failurePolicyRule{i}")
  return js


def webhook_errors(jobset: dict) -> list[str]:
  """What JobSet's validating webhook says about a (defaulted) JobSet's failure policy.

  Source: pkg/webhooks/jobset_webhook.go, ValidateCreate and
  validateFailurePolicy: the RestartJob actions need the RestartJob gate (off),
  rule names 1-128 characters matching ruleNameFmt and unique, targetReplicatedJobs
  naming replicatedJobs, onJobFailureReasons among validOnJobFailureReasons; and
  successPolicy.targetReplicatedJobs naming replicatedJobs.
  """
  spec = jobset["spec"]
  names = {r["name"] for r in spec["replicatedJobs"]}
  errors = [f"invalid replicatedJob name '{n}' does not appear in .spec.ReplicatedJobs"
            for n in spec.get("successPolicy", {}).get("targetReplicatedJobs", []) if n not in names]
  rules = (spec.get("failurePolicy") or {}).get("rules", [])
  if any(r["action"] in (RESTART_JOB, RESTART_JOB_IGNORE_MAX) for r in rules):
    return errors + ["RestartJob and RestartJobAndIgnoreMaxRestarts failure policy actions are not "
                     "allowed when RestartJob feature gate is disabled"]
  indices: dict[str, list[int]] = {}
  for i, rule in enumerate(rules):
    name = rule["name"]
    if not 1 <= len(name) <= 128:
      errors.append(f"invalid failure policy rule name of length {len(name)}, the rule name must be at "
                    "least 1 characters long and at most 128 characters long")
    indices.setdefault(name, []).append(i)
    if not _RULE_NAME.match(name):
      errors.append(f"invalid failure policy rule name '{name}', a failure policy rule name must start "
                    "with an alphabetic character, optionally followed by a string of alphanumeric "
                    "characters or '_,:', and must end with an alphanumeric character or '_'")
    errors += [f"invalid replicatedJob name '{n}' in failure policy does not appear in .spec.ReplicatedJobs"
               for n in rule.get("targetReplicatedJobs", []) if n not in names]
    errors += [f"invalid job failure reason '{r}' in failure policy is not a recognized job failure reason"
               for r in rule.get("onJobFailureReasons", []) if r not in VALID_JOB_FAILURE_REASONS]
  errors += [f"rule names are not unique, rules with indices [{' '.join(map(str, ix))}] all have the same "
             f"name '{name}'" for name, ix in indices.items() if len(ix) > 1]
  return errors


def validate(jobset: dict) -> dict:
  """The defaulted JobSet, or InvalidJobSet, or NotImplementedError for what is not simulated."""
  js = defaulted(jobset)
  errors = webhook_errors(js)
  if errors:
    raise InvalidJobSet(f"JobSet {js['metadata']['name']} is invalid:\n* " + "\n* ".join(errors))
  spec = js["spec"]
  for field in _NOT_SIMULATED:
    if field in spec:
      raise NotImplementedError(f"JobSet spec field {field!r} is not simulated")
  if spec.get("managedBy") not in (None, "jobset.sigs.k8s.io/jobset-controller"):
    raise NotImplementedError("managedBy: an external controller (MultiKueue) is not simulated")
  if any("dependsOn" in r for r in spec["replicatedJobs"]):
    raise NotImplementedError("dependsOn is not simulated")
  strategy = (spec.get("failurePolicy") or {}).get("restartStrategy", "Recreate")
  if strategy not in ("Recreate", "BlockingRecreate"):
    raise NotImplementedError(f"restartStrategy {strategy} is not simulated")
  return js


# ------------------------------------------------------------------ names, hosts, labels


def job_name(jobset_name: str, replicated_job: str, job_index: int) -> str:
  """A child Job's name, `<jobset>-<replicatedJob>-<jobIndex>`, the same in every restart.

  Source: pkg/util/placement/placement.go, GenJobName.
  """
  return f"{jobset_name}-{replicated_job}-{job_index}"


def subdomain(jobset: dict) -> str:
  """The pods' subdomain and the headless Service's name: network.subdomain, else the JobSet's name.

  Source: jobset_controller.go, GetSubdomain (and createHeadlessSvcIfNecessary,
  which names the Service so and creates it only if none of that name exists).
  """
  return (jobset["spec"].get("network") or {}).get("subdomain") or jobset["metadata"]["name"]


def pod_host_names(jobset: dict, replicated_job: str, job_index: int) -> Optional[list[str]]:
  """Every pod's DNS name in child Job `job_index`: `<jobset>-<rjob>-<jobIndex>-<podIndex>.<subdomain>`.

  Source: jobset_controller.go, constructJob (the subdomain is set only when
  dnsHostnamesEnabled: network.enableDNSHostnames, true by default) and the
  Job controller's pod host name `<job>-<index>` (standins.job_rules.pod_hostname,
  which placement.go's GenPodName spells out the same way). One name per
  completion index: completions pods, not parallelism. None when DNS host names
  are off or the Job is not Indexed: the pods then have no subdomain or no
  host name, so no stable name.
  """
  js = defaulted(jobset)
  (rjob,) = [r for r in js["spec"]["replicatedJobs"] if r["name"] == replicated_job]
  if not js["spec"]["network"]["enableDNSHostnames"] or rjob["template"]["spec"]["completionMode"] != "Indexed":
    return None
  name = job_name(js["metadata"]["name"], replicated_job, job_index)
  return [f"{name}-{i}.{subdomain(js)}" for i in range(rjob["template"]["spec"]["completions"])]


def object_labels(jobset: dict, replicated_job: str, job_index: int, restarts: int, uid: str) -> dict:
  """The labels (and, the same keys and values, annotations) on a child Job and its pod template.

  Source: jobset_controller.go, labelAndAnnotateObject (with globalReplicas,
  globalJobIndex, groupReplicas, groupJobIndex and jobHashKey, the SHA-1 of
  `<namespace>/<jobName>`); the restart attempt is `status.restarts`. The
  job-restart-attempt key is added only under the RestartJob gate (off). The
  JobSet's UID, unlike the child Job's, is the same in every restart.
  """
  js = defaulted(jobset)
  rjobs = js["spec"]["replicatedJobs"]
  (rjob,) = [r for r in rjobs if r["name"] == replicated_job]
  group = rjob["groupName"]
  name = job_name(js["metadata"]["name"], replicated_job, job_index)
  namespace = js["metadata"].get("namespace", "default")
  before = sum(r["replicas"] for r in rjobs[:rjobs.index(rjob)])
  group_before = sum(r["replicas"] for r in rjobs[:rjobs.index(rjob)] if r["groupName"] == group)
  return {
      JOBSET_NAME_KEY: js["metadata"]["name"],
      JOBSET_UID_KEY: uid,
      REPLICATED_JOB_NAME_KEY: replicated_job,
      RESTARTS_KEY: str(restarts),
      REPLICATED_JOB_REPLICAS_KEY: str(rjob["replicas"]),
      GLOBAL_REPLICAS_KEY: str(sum(r["replicas"] for r in rjobs)),
      JOB_INDEX_KEY: str(job_index),
      JOB_KEY: hashlib.sha1(f"{namespace}/{name}".encode()).hexdigest(),
      JOB_GLOBAL_INDEX_KEY: str(before + job_index),
      GROUP_NAME_KEY: group,
      GROUP_REPLICAS_KEY: str(sum(r["replicas"] for r in rjobs if r["groupName"] == group)),
      JOB_GROUP_INDEX_KEY: str(group_before + job_index),
  }


def construct_job(jobset: dict, replicated_job: str, job_index: int, restarts: int, uid: str) -> dict:
  """The child Job JobSet creates: the replicatedJob's template, labelled, in the subdomain.

  Source: jobset_controller.go, constructJob: the template's labels and
  annotations plus labelAndAnnotateObject's on the Job and on its pod
  template, `subdomain` when DNS host names are on, and `suspend` equal to the
  JobSet's (a JobSet Kueue holds suspended makes its Jobs suspended).
  """
  js = defaulted(jobset)
  (rjob,) = [r for r in js["spec"]["replicatedJobs"] if r["name"] == replicated_job]
  ours = object_labels(js, replicated_job, job_index, restarts, uid)
  template = copy.deepcopy(rjob["template"])
  spec = template["spec"]
  pod_meta = spec["template"].setdefault("metadata", {})
  pod_meta["labels"] = {**pod_meta.get("labels", {}), **ours}
  pod_meta["annotations"] = {**pod_meta.get("annotations", {}), **ours}
  if js["spec"]["network"]["enableDNSHostnames"]:
    spec["template"]["spec"]["subdomain"] = subdomain(js)
  spec["suspend"] = bool(js["spec"].get("suspend", False))
  meta = template.get("metadata", {})
  return {"apiVersion": "batch/v1", "kind": "Job",
          "metadata": {"name": job_name(js["metadata"]["name"], replicated_job, job_index),
                       "namespace": js["metadata"].get("namespace", "default"),
                       "labels": {**meta.get("labels", {}), **ours},
                       "annotations": {**meta.get("annotations", {}), **ours}},
          "spec": spec, "status": {}}


# ------------------------------------------------------------------ the child Jobs' state


def job_finished(job: dict) -> Optional[str]:
  """"Complete" or "Failed" once the Job has that condition True, else None (active).

  Source: jobset_controller.go, JobFinished.
  """
  for cond in job.get("status", {}).get("conditions", []):
    if cond["type"] in ("Complete", "Failed") and cond.get("status", "True") == "True":
      return cond["type"]
  return None


def job_ready(job: dict, ready_pods: int, succeeded_pods: int) -> bool:
  """Whether an active child Job counts as ready in `status.replicatedJobsStatus[].ready`.

  Source: jobset_controller.go, calculateReplicatedJobStatuses: succeeded +
  ready pods reach min(parallelism, completions). Kueue's PodsReady for a
  JobSet reads these counts (standins.kueue_rules.jobset_pods_ready).
  """
  spec = job["spec"]
  count = min(spec.get("parallelism", 1), spec.get("completions", spec.get("parallelism", 1)))
  return succeeded_pods + ready_pods >= count


def classify(jobs: list[dict], restarts: int) -> dict[str, list[dict]]:
  """The child Jobs as JobSet sees them: previous (an earlier restart), active, successful, failed.

  Source: jobset_controller.go, getChildJobs: a Job whose restart-attempt
  label is below `status.restarts` is `previous`, to be deleted, whatever its
  state, succeeded included; the others by JobFinished.
  """
  out = {"previous": [], "active": [], "successful": [], "failed": []}
  for job in jobs:
    if int(job["metadata"]["labels"][RESTARTS_KEY]) < restarts:
      out["previous"].append(job)
    else:
      out[{None: "active", "Complete": "successful", "Failed": "failed"}[job_finished(job)]].append(job)
  return out


def jobs_to_create(jobset: dict, owned: dict[str, list[dict]], restarts: int, uid: str) -> list[dict]:
  """The child Jobs to create now: each missing one, none while BlockingRecreate waits.

  Source: jobset_controller.go, constructJobsFromTemplate and shouldCreateJob:
  with BlockingRecreate nothing is created while any Job of an earlier restart
  still exists; a Job is created only if no Job of its name exists in any
  state (so under Recreate too, each waits for its own predecessor, whose
  foreground deletion ends once its pods are gone).
  """
  js = defaulted(jobset)
  policy = js["spec"].get("failurePolicy") or {}
  if owned["previous"] and policy.get("restartStrategy") == "BlockingRecreate":
    return []
  existing = {j["metadata"]["name"] for bucket in owned.values() for j in bucket}
  return [construct_job(js, rjob["name"], i, restarts, uid)
          for rjob in js["spec"]["replicatedJobs"] for i in range(rjob["replicas"])
          if job_name(js["metadata"]["name"], rjob["name"], i) not in existing]


# ------------------------------------------------------------------ the failure policy


def _failed_condition(job: dict) -> Optional[dict]:
  """failure_policy.go, findJobFailureCondition: the Job's Failed condition, if True."""
  for cond in job.get("status", {}).get("conditions", []):
    if cond["type"] == "Failed" and cond.get("status", "True") == "True":
      return cond
  return None


def rule_applies(rule: dict, job: dict) -> bool:
  """Whether a failure-policy rule matches a failed child Job.

  Source: failure_policy.go, ruleIsApplicable and anyMatchFound: the Job's
  Failed reason among onJobFailureReasons (empty: any), its message matching
  one of onJobFailureMessagePatterns (empty: any; a Go regexp.MatchString, an
  unanchored search; a pattern that does not compile is skipped: Python's re
  stands in for RE2 here), and its replicatedJob among targetReplicatedJobs
  (empty: any). A Job without the replicatedjob-name label matches no rule.
  """
  cond = _failed_condition(job)
  reasons, patterns = rule.get("onJobFailureReasons") or [], rule.get("onJobFailureMessagePatterns") or []
  if reasons and cond["reason"] not in reasons:
    return False
  if patterns and not any(_search(p, cond.get("message", "")) for p in patterns):
    return False
  parent = job["metadata"].get("labels", {}).get(REPLICATED_JOB_NAME_KEY, "")
  targets = rule.get("targetReplicatedJobs") or []
  return bool(parent) and (not targets or parent in targets)


def _search(pattern: str, text: str) -> bool:
  try:
    return re.search(pattern, text) is not None
  except re.error:
    return False


def first_failed_job(failed: list[dict]) -> Optional[dict]:
  """The failed Job whose Failed condition is oldest (failure_policy.go, findFirstFailedJob)."""
  dated = [j for j in failed if _failed_condition(j) is not None]
  return min(dated, key=lambda j: _failed_condition(j)["lastTransitionTime"], default=None)


def first_matching_rule(rules: list[dict], failed: list[dict]) -> tuple[Optional[dict], Optional[dict]]:
  """The first rule, in order, that matches any failed Job, and the earliest-failed Job it matches.

  Source: failure_policy.go, findFirstFailedPolicyRuleAndJob: rules in order,
  first match wins; for that rule the matching Job that failed first.
  (None, None) when no rule matches.
  """
  for rule in rules:
    matched = [j for j in failed if _failed_condition(j) is not None and rule_applies(rule, j)]
    if matched:
      return rule, first_failed_job(matched)
  return None, None


def _with_condition(status: dict, cond: dict) -> dict:
  conditions = [c for c in status.get("conditions", []) if c["type"] != cond["type"]]
  return {**status, "conditions": conditions + [cond]}


def _failed(status: dict, reason: str, message: str) -> dict:
  """failure_policy.go, setJobSetFailedCondition: Failed True, Restarting False, terminalState."""
  status = _with_condition(status, {"type": "Failed", "status": "True", "reason": reason, "message": message})
  status = _with_condition(status, {"type": "Restarting", "status": "False", "reason": "JobSetFailed",
                                    "message": "jobset failed"})
  return {**status, "terminalState": "Failed"}


def _with_first_failed(message: str, job: dict) -> str:
  """failure_policy.go, messageWithFirstFailedJob."""
  return f"{message} (first failed job: {job['metadata']['name']})"


def execute_failure_policy(jobset: dict, status: dict, failed: list[dict]) -> dict:
  """The JobSet's status after its failure policy acted on the failed child Jobs of this attempt.

  Source: failure_policy.go, executeFailurePolicy and the action appliers:
  no failurePolicy: Failed, reason FailedJobs, at once. Else the first
  matching rule's action, or RestartJobSet with no match
  (defaultFailurePolicyRuleAction). FailJobSet: Failed, reason
  FailJobSetFailurePolicyAction. RestartJobSet: Failed with reason
  ReachedMaxRestarts once restartsCountTowardsMax >= maxRestarts, else
  restarts and restartsCountTowardsMax + 1 and Restarting True (reason
  FailurePolicy_<rule> or DefaultFailurePolicy).
  RestartJobSetAndIgnoreMaxRestarts: restarts + 1 only, never checked against
  maxRestarts. The restart itself (deleting and recreating the Jobs) is the
  next reconcile's (`reconcile`).
  """
  js = defaulted(jobset)
  policy = js["spec"].get("failurePolicy")
  if policy is None:
    return _failed(status, FAILED_JOBS[0], _with_first_failed(FAILED_JOBS[1], first_failed_job(failed)))
  rule, job = first_matching_rule(policy.get("rules", []), failed)
  action = rule["action"] if rule else DEFAULT_ACTION
  job = job or first_failed_job(failed)
  if action == FAIL_JOBSET:
    return _failed(status, FAIL_JOBSET_ACTION[0], _with_first_failed(FAIL_JOBSET_ACTION[1], job))
  if action not in (RESTART_JOBSET, RESTART_JOBSET_IGNORE_MAX):
    raise NotImplementedError(f"failure policy action {action} is not simulated")
  counts = action == RESTART_JOBSET
  if counts and status.get("restartsCountTowardsMax", 0) >= policy.get("maxRestarts", 0):
    return _failed(status, REACHED_MAX_RESTARTS[0], _with_first_failed(REACHED_MAX_RESTARTS[1], job))
  message = RESTART_JOBSET_MESSAGE if counts else RESTART_JOBSET_IGNORE_MAX_MESSAGE
  status = _with_condition(status, {
      "type": "Restarting", "status": "True",
      "reason": RESTARTING_RULE_FORMAT.format(rule["name"]) if rule else RESTARTING_DEFAULT_POLICY,
      "message": _with_first_failed(message, job)})
  return {**status, "restarts": status.get("restarts", 0) + 1,
          "restartsCountTowardsMax": status.get("restartsCountTowardsMax", 0) + int(counts)}


# ------------------------------------------------------------------ success


def jobs_expected_to_succeed(jobset: dict) -> int:
  """How many child Jobs must complete: 1 for Any, else every replica of the targeted replicatedJobs.

  Source: success_policy.go, numJobsExpectedToSucceed (targetReplicatedJobs
  empty: all). The webhook defaults the policy to operator All.
  """
  policy = defaulted(jobset)["spec"]["successPolicy"]
  if policy["operator"] == "Any":
    return 1
  targets = policy.get("targetReplicatedJobs") or []
  return sum(r["replicas"] for r in defaulted(jobset)["spec"]["replicatedJobs"]
             if not targets or r["name"] in targets)


def execute_success_policy(jobset: dict, status: dict, successful: list[dict]) -> dict:
  """Completed (reason AllJobsCompleted) once enough targeted child Jobs of this attempt completed.

  Source: success_policy.go, numJobsMatchingSuccessPolicy and
  jobMatchesSuccessPolicy; jobset_controller.go, executeSuccessPolicy and
  setJobSetCompletedCondition. Only Jobs of the current restart attempt count.
  """
  targets = defaulted(jobset)["spec"]["successPolicy"].get("targetReplicatedJobs") or []
  done = [j for j in successful if not targets or j["metadata"]["labels"][REPLICATED_JOB_NAME_KEY] in targets]
  if len(done) < jobs_expected_to_succeed(jobset):
    return status
  status = _with_condition(status, {"type": "Completed", "status": "True", "reason": ALL_JOBS_COMPLETED[0],
                                    "message": ALL_JOBS_COMPLETED[1]})
  status = _with_condition(status, {"type": "Restarting", "status": "False", "reason": "JobSetCompleted",
                                    "message": ALL_JOBS_COMPLETED[1]})
  return {**status, "terminalState": "Completed"}


def finished(status: dict) -> bool:
  """jobset_controller.go, jobSetFinished: Completed or Failed True."""
  return any(c["type"] in ("Completed", "Failed") and c["status"] == "True" for c in status.get("conditions", []))


# ------------------------------------------------------------------ one reconcile


def reconcile(jobset: dict, status: dict, jobs: list[dict], uid: str) -> tuple[dict, dict[str, list]]:
  """One pass of the JobSet controller: the new status and what it does to child Jobs.

  Source: jobset_controller.go, reconcile, in its order: a finished JobSet
  deletes its active Jobs and stops; Jobs of an earlier restart are deleted
  (foreground: each goes once its pods have); any failed Job runs the failure
  policy and ends the pass; else completed Jobs run the success policy (and
  end it once Completed); then missing Jobs are created (jobs_to_create), and
  a suspended JobSet suspends its active Jobs, a resumed one resumes them
  (suspendJobs, resumeJobsIfNecessary). Returns (status, {"delete", "create",
  "suspend", "resume": [Job names or Jobs]}). A Job already being deleted
  (metadata.deletionTimestamp) is not deleted again (deleteJobs).
  """
  js = validate(jobset)
  restarts = status.get("restarts", 0)
  owned = classify(jobs, restarts)
  todo = {"delete": [], "create": [], "suspend": [], "resume": []}
  deletable = lambda bucket: [j["metadata"]["name"] for j in bucket if not j["metadata"].get("deletionTimestamp")]
  if finished(status):
    todo["delete"] = deletable(owned["active"])
    return status, todo
  todo["delete"] = deletable(owned["previous"])
  if owned["failed"]:
    return execute_failure_policy(js, status, owned["failed"]), todo
  if owned["successful"]:
    status = execute_success_policy(js, status, owned["successful"])
    if finished(status):
      return status, todo
  todo["create"] = jobs_to_create(js, owned, restarts, uid)
  suspended = bool(js["spec"].get("suspend", False))
  todo["suspend" if suspended else "resume"] = [
      j["metadata"]["name"] for j in owned["active"] if bool(j["spec"].get("suspend", False)) != suspended]
  return status, todo
