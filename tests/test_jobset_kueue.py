"""The JobSet variant and Kueue admission, as rendered by the real kustomize (docs/kubernetes.md).

What the JobSet and Kueue controllers will do with these objects is taken from
their sources at the pinned tags (kubernetes-sigs/jobset v0.12.0,
kubernetes-sigs/kueue v0.19.2, the same as tests/crds/); each rule below names the
file it follows. These tests check that the manifests say what docs/kubernetes.md
promises, and that the trainer derives the cluster the JobSet controller will
build. The controllers' rules themselves, as pure functions, are the stand-ins
tests/standins/jobset_rules.py and tests/standins/kueue_rules.py, which
tests/test_jobset_kueue_rules.py applies to the same rendered manifests
(restarts, admission, waitForPodsReady); neither runs processes.
"""

import os
import re

import pytest
import yaml

from conftest import REPO
from schemas import KUBERNETES_VERSION
from standins import jobset_rules
from standins.job_rules import match_pod_failure_policy
from test_kustomize import (CPU_DEV, GKE, JOB_KUEUE, JOBSET, JOBSET_KUEUE, KUEUE, TRAINING, _docs, _one, render,
                            validate_rendered)
from trainer import errors
from trainer.cluster import kubernetes
from trainer.cluster import resolver


def _jobset(overlay=JOBSET) -> dict:
  return _one(_docs(render(REPO, overlay)), "JobSet")


def _workers(jobset: dict) -> dict:
  (rjob,) = jobset["spec"]["replicatedJobs"]
  return rjob


# ----------------------------------------------------------------- the JobSet runs the Job's pods


def test_the_jobset_runs_k8s_job_yamls_pods_and_replaces_the_job_and_its_service():
  docs = _docs(render(REPO, JOBSET))
  plain = _docs(render(REPO, GKE))
  assert not [d for d in docs if d["kind"] == "Job"]
  # JobSet makes the workers' headless Service itself (no hand-made one), named after the
  # subdomain, the JobSet's name when unset (jobset_controller.go, GetSubdomain); it
  # creates none where a Service of that name exists (createHeadlessSvcIfNecessary).
  jobset = _one(docs, "JobSet")
  assert jobset["spec"]["network"] == {"enableDNSHostnames": True}
  services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
  assert "cnn-trainer-workers" not in services and jobset["metadata"]["name"] not in services
  # One Job of N workers, started together, replaced only once gone (as k8s/job.yaml).
  rjob = _workers(jobset)
  job = _one(plain, "Job")["spec"]
  spec = rjob["template"]["spec"]
  assert rjob["replicas"] == 1 and spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] == job["completions"]
  assert spec["podReplacementPolicy"] == "Failed" and spec["podFailurePolicy"] == job["podFailurePolicy"]
  assert spec["activeDeadlineSeconds"] == job["activeDeadlineSeconds"]  # the bound on every hang
  # The same pod as the GKE overlay's Job but for what tells a JobSet's pod where it is.
  pod, plain_pod = spec["template"], job["template"]
  assert pod["metadata"] == plain_pod["metadata"]
  strip = lambda p: {k: v for k, v in p["spec"].items() if k not in ("containers", "subdomain")}
  assert strip(pod) == strip(plain_pod) and "subdomain" not in pod["spec"]
  container, plain_container = pod["spec"]["containers"][0], plain_pod["spec"]["containers"][0]
  assert {k: v for k, v in container.items() if k != "env"} == {k: v for k, v in plain_container.items() if k != "env"}
  # The NetworkPolicy that admits only workers selects the JobSet's pods.
  policy = _one(docs, "NetworkPolicy", "cnn-trainer-workers")["spec"]["podSelector"]["matchLabels"]
  assert policy.items() <= pod["metadata"]["labels"].items()


# The labels JobSet v0.12.0 sets on a child Job's pod template (jobset_controller.go,
# labelAndAnnotateObject), and the Job controller's own; JobSet sets no env.
def _pod_labels(jobset: dict, rjob: str, job_index: int) -> dict:
  job_name = f"{jobset['metadata']['name']}-{rjob}-{job_index}"  # pkg/util/placement, GenJobName
  return {"jobset.sigs.k8s.io/jobset-name": jobset["metadata"]["name"], "jobset.sigs.k8s.io/jobset-uid": "js-uid",
          "jobset.sigs.k8s.io/replicatedjob-name": rjob, "jobset.sigs.k8s.io/job-index": str(job_index),
          "batch.kubernetes.io/job-name": job_name, "batch.kubernetes.io/controller-uid": f"uid-of-{job_name}"}


def _env(jobset: dict, pod_index: int, job_index: int = 0) -> dict:
  """The trainer's variables in pod `pod_index`, the downward API resolved as the kubelet would."""
  rjob = _workers(jobset)
  labels = _pod_labels(jobset, rjob["name"], job_index)
  env = {"JOB_COMPLETION_INDEX": str(pod_index)}
  for var in rjob["template"]["spec"]["template"]["spec"]["containers"][0]["env"]:
    if "value" in var:
      env[var["name"]] = var["value"]
    else:
      path = var["valueFrom"]["fieldRef"]["fieldPath"]
      label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path).group(1)
      env[var["name"]] = labels.get(label, "")  # a missing label reads as ""
  return env


@pytest.mark.parametrize("overlay", [JOBSET, JOBSET_KUEUE])
def test_the_trainer_derives_the_host_names_the_jobset_gives_its_pods(overlay):
  """Worker i is <jobset>-<replicatedJob>-0-<i>.<subdomain>: the Indexed Job's host name in JobSet's subdomain."""
  jobset = _jobset(overlay)
  count = _workers(jobset)["template"]["spec"]["completions"]
  subdomain = jobset["spec"]["network"].get("subdomain", jobset["metadata"]["name"])  # GetSubdomain
  hosts = [f"cnn-trainer-workers-0-{i}.{subdomain}:2222" for i in range(count)]
  for i in range(count):
    cluster = resolver.cluster_from_env(_env(jobset, i))
    assert cluster.tf_config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
    assert cluster.source.startswith("JobSet") and cluster.is_chief == (i == 0)
  # The lock's owner is the JobSet, not the child Job JobSet recreates on a restart.
  assert _env(jobset, 0)["TRAINER_JOB_UID"] == "js-uid"
  # The variables the trainer reads are the labels JobSet sets (kubernetes.JOBSET_LABELS).
  container = _workers(jobset)["template"]["spec"]["template"]["spec"]["containers"][0]
  refs = {v["name"]: v["valueFrom"]["fieldRef"]["fieldPath"] for v in container["env"] if "valueFrom" in v}
  for name, label in kubernetes.JOBSET_LABELS.items():
    assert refs[name] == f"metadata.labels['{label}']"


def test_a_second_job_of_the_replicated_job_exits_2():
  """replicas: 2 would train two clusters into one JOB_DIR: the second Job's pods refuse to start."""
  with pytest.raises(errors.ClusterError, match=r"TRAINER_JOB_INDEX=1: .*replicas: 1"):
    resolver.cluster_from_env(_env(_jobset(), 0, job_index=1))


# ------------------------------------------------------------------ the failure policy, end to end

# The Job controller's failure reasons (kubernetes/kubernetes staging/src/k8s.io/api/batch/v1/types.go).
POD_FAILURE_POLICY, BACKOFF_LIMIT, DEADLINE = "PodFailurePolicy", "BackoffLimitExceeded", "DeadlineExceeded"


def _job_outcome(spec: dict, code: int, conditions=()) -> tuple[str, str]:
  """(what the child Job does with a failed pod, the reason it fails with, or "" if it does not)."""
  action, _ = match_pod_failure_policy(spec["podFailurePolicy"], "trainer", code, list(conditions))
  if action == "FailJob":
    return action, POD_FAILURE_POLICY
  if action == "Count":
    # One counted failure more than backoffLimit fails the Job (job_controller.go, exceedsBackoffLimit).
    return action, BACKOFF_LIMIT if spec["backoffLimit"] == 0 else ""
  return action, ""


def _jobset_verdict(jobset: dict, reason: str) -> tuple[str, bool]:
  """(the JobSet's action, whether it spent one of maxRestarts) for its child Job failed with
  `reason`, from the JobSet stand-in's failure policy (tests/standins/jobset_rules.py,
  execute_failure_policy: pkg/controllers/failure_policy.go) on a fresh JobSet's status."""
  job = jobset_rules.construct_job(jobset, _workers(jobset)["name"], 0, 0, "uid")
  job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": "",
                                   "lastTransitionTime": "2026-12-07T00:00:00Z"}]}
  status = jobset_rules.execute_failure_policy(jobset, {}, [job])
  failed = [c["reason"] for c in status.get("conditions", []) if c["type"] == "Failed"]
  if failed:
    assert failed == [jobset_rules.FAIL_JOBSET_ACTION[0]], status
    return jobset_rules.FAIL_JOBSET, False
  (restarting,) = [c for c in status["conditions"] if c["type"] == "Restarting"]
  assert status["restarts"] == 1, status
  action = next(a for a, said in ((jobset_rules.RESTART_JOBSET, jobset_rules.RESTART_JOBSET_MESSAGE),
                                  (jobset_rules.RESTART_JOBSET_IGNORE_MAX,
                                   jobset_rules.RESTART_JOBSET_IGNORE_MAX_MESSAGE))
                if restarting["message"].startswith(said))
  return action, status["restartsCountTowardsMax"] == 1


DISRUPTED = [{"type": "DisruptionTarget", "status": "True"}]


@pytest.mark.parametrize("code, conditions, job, jobset_action, spends", [
    (errors.EXIT_USAGE, (), "FailJob", "FailJobSet", False),           # bad input: everything stops
    (errors.EXIT_PREEMPTED, (), "Ignore", None, False),                # SIGTERM after a checkpoint
    (137, DISRUPTED, "Ignore", None, False),                           # evicted, killed at the grace period
    (errors.EXIT_PEER_LOST, (), "Ignore", None, False),                # the peer's failure, counted there
    (errors.EXIT_FAILURE, (), "Count", "RestartJobSet", True),         # a crash
    (137, (), "Count", "RestartJobSet", True),                         # OOM-killed
    (errors.EXIT_TRANSIENT, (), "Count", "RestartJobSet", True),       # storage past the retries
])
def test_the_failure_policy_table(code, conditions, job, jobset_action, spends):
  """docs/kubernetes.md's table: exit 2 fails the JobSet, preemption spends nothing, a crash one of maxRestarts.

  RestartJobSet counts against maxRestarts (restartsCountTowardsMax += 1); FailJobSet ends
  the JobSet at once; a pod the child Job ignores is replaced within the Job and the JobSet
  never sees a failure (api/jobset/v1alpha2/jobset_types.go, FailurePolicyAction).
  """
  jobset = _jobset()
  action, reason = _job_outcome(_workers(jobset)["template"]["spec"], code, conditions)
  assert action == job
  # A pod the child Job ignores never fails it: the JobSet sees nothing, and spends nothing.
  assert (_jobset_verdict(jobset, reason) if reason else (None, False)) == (jobset_action, spends)


def test_a_deadline_fails_the_jobset_rather_than_starting_it_again():
  """A restarted Job's activeDeadlineSeconds would count from zero again: the bound would not hold."""
  assert _jobset_verdict(_jobset(), DEADLINE) == ("FailJobSet", False)


def test_the_failure_policy_passes_jobsets_webhook_rules():
  """pkg/webhooks/jobset_webhook.go (v0.12.0): rule names, reasons, and the restart strategy."""
  policy = _jobset()["spec"]["failurePolicy"]
  names = [rule["name"] for rule in policy["rules"]]
  assert len(set(names)) == len(names)  # "rule names are not unique"
  assert all(re.fullmatch(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", n) for n in names)  # ruleNameRegexp
  valid = {BACKOFF_LIMIT, DEADLINE, "FailedIndexes", "MaxFailedIndexesExceeded", POD_FAILURE_POLICY}
  assert {r for rule in policy["rules"] for r in rule["onJobFailureReasons"]} <= valid  # validOnJobFailureReasons
  # The RestartJob actions need a feature gate; none is used.
  assert {rule["action"] for rule in policy["rules"]} <= {"FailJobSet", "RestartJobSet",
                                                           "RestartJobSetAndIgnoreMaxRestarts"}
  # No old pod beside a new one under the same host name (constructJobsFromTemplate).
  assert policy["restartStrategy"] == "BlockingRecreate" and policy["maxRestarts"] >= 1


# ------------------------------------------------------------------ Kueue


def _kueue_objects() -> dict:
  return {d["kind"]: d for d in _docs(render(REPO, KUEUE))}


def _queued(overlay):
  docs = _docs(render(REPO, overlay))
  return [d for d in docs if d["kind"] in ("Job", "JobSet")]


@pytest.mark.parametrize("overlay", [JOB_KUEUE, JOBSET_KUEUE])
def test_under_kueue_the_training_names_the_local_queue_and_is_created_suspended(overlay):
  (workload,) = _queued(overlay)
  local = _kueue_objects()["LocalQueue"]
  assert workload["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == local["metadata"]["name"]
  assert workload["metadata"]["namespace"] == local["metadata"]["namespace"]
  assert workload["spec"]["suspend"] is True
  # Only the training is queued: TensorBoard and TF Serving keep running.
  text = render(REPO, overlay)
  assert text.count("kueue.x-k8s.io/queue-name") == 1


@pytest.mark.parametrize("overlay", [GKE, CPU_DEV, JOBSET])
def test_without_kueue_nothing_is_suspended_or_queued(overlay):
  (workload,) = _queued(overlay)
  assert "suspend" not in workload["spec"] and "kueue.x-k8s.io" not in render(REPO, overlay)


@pytest.mark.parametrize("overlay", [JOB_KUEUE, JOBSET_KUEUE])
def test_the_cluster_queue_can_admit_one_whole_training(overlay):
  """Kueue admits all workers at once or none: the quota must hold every worker's requests.

  Every requested resource must be covered, or the workload is never admitted; the
  flavor's node labels are added to the pods' nodeSelector, so they must agree.
  """
  (workload,) = _queued(overlay)
  spec = _workers(workload)["template"]["spec"] if workload["kind"] == "JobSet" else workload["spec"]
  pod = spec["template"]["spec"]
  objects = _kueue_objects()
  (group,) = objects["ClusterQueue"]["spec"]["resourceGroups"]
  (flavor,) = group["flavors"]
  assert flavor["name"] == objects["ResourceFlavor"]["metadata"]["name"]
  assert objects["LocalQueue"]["spec"]["clusterQueue"] == objects["ClusterQueue"]["metadata"]["name"]
  requests = pod["containers"][0]["resources"]["requests"]
  assert set(requests) <= set(group["coveredResources"])
  quota = {r["name"]: _quantity(r["nominalQuota"]) for r in flavor["resources"]}
  for name, value in requests.items():
    assert _quantity(value) * spec["parallelism"] <= quota[name], name
  assert objects["ResourceFlavor"]["spec"]["nodeLabels"].items() <= pod["nodeSelector"].items()
  # Only the trainer's namespace may use the queue.
  selector = objects["ClusterQueue"]["spec"]["namespaceSelector"]["matchLabels"]
  assert selector == {"kubernetes.io/metadata.name": workload["metadata"]["namespace"]}


def _quantity(value) -> float:
  units = {"Gi": 2 ** 30, "Mi": 2 ** 20, "m": 1e-3}
  for suffix, factor in units.items():
    if str(value).endswith(suffix):
      return float(str(value)[:-len(suffix)]) * factor
  return float(value)


def test_kueue_objects_are_cluster_scoped_but_the_local_queue():
  objects = _kueue_objects()
  assert "namespace" not in objects["ResourceFlavor"]["metadata"]
  assert "namespace" not in objects["ClusterQueue"]["metadata"]
  with open(os.path.join(REPO, GKE, "kustomization.yaml"), encoding="utf-8") as f:
    assert objects["LocalQueue"]["metadata"]["namespace"] == yaml.safe_load(f)["namespace"]


# ------------------------------------------------------------------ the oldest Kubernetes promised

# The Job fields the manifests use, and the Kubernetes releases where each went beta
# (on by default) and GA, from kubernetes/website
# content/en/docs/reference/command-line-tools-reference/feature-gates/<gate>.md.
JOB_FEATURES = {
    "podFailurePolicy": ("JobPodFailurePolicy", "1.26", "1.31"),
    "backoffLimitPerIndex": ("JobBackoffLimitPerIndex", "1.29", "1.33"),
    "maxFailedIndexes": ("JobBackoffLimitPerIndex", "1.29", "1.33"),
    "podReplacementPolicy": ("JobPodReplacementPolicy", "1.29", "1.34"),
}
MINIMUM_KUBERNETES = "1.29"


def _version(text: str) -> tuple:
  return tuple(int(p) for p in text.split("."))


def test_the_minimum_kubernetes_has_every_job_feature_on_by_default():
  assert _version(MINIMUM_KUBERNETES) == max(_version(beta) for _, beta, _ in JOB_FEATURES.values())
  docs = open(os.path.join(REPO, "docs", "kubernetes.md"), encoding="utf-8").read()
  assert f"Kubernetes {MINIMUM_KUBERNETES} or later" in docs
  # Every gated Job field the manifests use is in the table.
  used = set()
  for overlay in TRAINING:
    for doc in _queued(overlay):
      spec = _workers(doc)["template"]["spec"] if doc["kind"] == "JobSet" else doc["spec"]
      used |= set(spec) & {"podFailurePolicy", "backoffLimitPerIndex", "maxFailedIndexes", "podReplacementPolicy",
                           "successPolicy", "managedBy"}
  assert used == set(JOB_FEATURES), used


@pytest.mark.parametrize("overlay", TRAINING)
def test_every_core_field_validates_at_the_minimum_kubernetes(overlay, tmp_path):
  validate_rendered(render(REPO, overlay), tmp_path, f"{MINIMUM_KUBERNETES}.0")


def test_the_version_check_refuses_the_release_before():
  """1.28's Job API still requires onPodConditions in every podFailurePolicy rule, so the check refuses
  k8s/job.yaml there (and 1.27's has no backoffLimitPerIndex at all): 1.29 is the oldest it passes."""
  from schemas import validate  # pylint: disable=import-outside-toplevel
  result = validate(os.path.join(REPO, "k8s", "job.yaml"), kubernetes_version="1.28.0")
  assert result.returncode != 0, result.stdout
  assert "job/cnn-trainer against version 1.28: spec.podFailurePolicy.rules.0: 'onPodConditions' is a required" \
      in result.stdout, result.stdout
  assert _version(KUBERNETES_VERSION.rsplit(".", 1)[0]) >= _version(MINIMUM_KUBERNETES)
