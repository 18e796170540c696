"""Kubernetes manifests and the Dockerfile: schema-valid, lint-clean, consistent with the code.

`kubernetes-validate --strict` checks every resource against the official
schemas of a pinned Kubernetes version and rejects unknown fields. The TFJob
is a custom resource it has no schema for, so its pod template is validated
as a Pod, the closest real check available offline.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from trainer import errors

KUBERNETES_VERSION = "1.33.0"
K8S = os.path.join(REPO, "k8s")


def _tool(name):
  return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


def _docs(name):
  with open(os.path.join(K8S, name), encoding="utf-8") as f:
    return [d for d in yaml.safe_load_all(f) if d]


def _kind(name, kind):
  (doc,) = [d for d in _docs(name) if d["kind"] == kind]
  return doc


def _validate(*paths):
  return subprocess.run([_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *paths],
                        capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))
                                        if not p.endswith("tfjob.yaml")))
def test_manifest_is_valid_against_kubernetes_schemas(name):
  result = _validate(os.path.join(K8S, name))
  assert result.returncode == 0, result.stdout + result.stderr
  assert "passed" in result.stdout and "WARN" not in result.stdout


def test_validator_rejects_unknown_fields(tmp_path):
  job = _kind("job.yaml", "Job")
  job["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # typo
  path = tmp_path / "job.yaml"
  path.write_text(yaml.safe_dump(job))
  result = _validate(str(path))
  assert result.returncode != 0 and "imagePullPolcy" in result.stdout


def test_tfjob_pod_template_is_a_valid_pod(tmp_path):
  tfjob = _kind("tfjob.yaml", "TFJob")
  worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["restartPolicy"] == "ExitCode"
  # Kubeflow's ExitCode policy retries 128-255 and fails 1-127.
  assert errors.EXIT_PREEMPTED >= 128 and errors.EXIT_PEER_LOST >= 128 and errors.EXIT_USAGE < 128
  template = worker["template"]
  assert template["spec"]["containers"][0]["name"] == "tensorflow"
  pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tfjob-worker", **template["metadata"]},
         "spec": {**template["spec"], "restartPolicy": "Never"}}
  path = tmp_path / "pod.yaml"
  path.write_text(yaml.safe_dump(pod))
  result = _validate(str(path))
  assert result.returncode == 0, result.stdout + result.stderr
  # The rest of tfjob.yaml (its NetworkPolicy) has schemas: validate it as is.
  others = [d for d in _docs("tfjob.yaml") if d["kind"] != "TFJob"]
  assert [d["kind"] for d in others] == ["NetworkPolicy"]
  path = tmp_path / "tfjob-others.yaml"
  path.write_text(yaml.safe_dump_all(others))
  result = _validate(str(path))
  assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout + result.stderr


def test_job_failure_policy_matches_the_exit_codes():
  spec = _kind("job.yaml", "Job")["spec"]
  rules = {r["action"]: r for r in spec["podFailurePolicy"]["rules"] if "onExitCodes" in r}
  assert rules["FailJob"]["onExitCodes"]["values"] == [errors.EXIT_USAGE]
  assert rules["Ignore"]["onExitCodes"]["values"] == [errors.EXIT_PREEMPTED]
  container = spec["template"]["spec"]["containers"][0]["name"]
  assert all(r["onExitCodes"]["containerName"] == container for r in rules.values())
  assert any(c.get("type") == "DisruptionTarget" for r in spec["podFailurePolicy"]["rules"]
             for c in r.get("onPodConditions", []))
  assert spec["podReplacementPolicy"] == "Failed"
  assert spec["backoffLimitPerIndex"] >= 1
  assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_job_is_an_indexed_job_wired_to_its_headless_service():
  job = _kind("job.yaml", "Job")
  service = _kind("job.yaml", "Service")
  spec, pod = job["spec"], job["spec"]["template"]["spec"]
  assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
  env = {e["name"]: e for e in pod["containers"][0]["env"]}
  assert int(env["TRAINER_NUM_WORKERS"]["value"]) == spec["completions"]
  assert env["TRAINER_SERVICE"]["value"] == service["metadata"]["name"] == pod["subdomain"]
  assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
  labels = job["spec"]["template"]["metadata"]["labels"]
  assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
  port = int(env["TRAINER_PORT"]["value"])
  assert service["spec"]["ports"][0]["port"] == port == pod["containers"][0]["ports"][0]["containerPort"]


def test_job_runs_on_gpus_with_a_restricted_security_context():
  pod = _kind("job.yaml", "Job")["spec"]["template"]["spec"]
  container = pod["containers"][0]
  assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
  assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
  assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]) and pod["nodeSelector"]
  assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
  assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
  assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                          "capabilities": {"drop": ["ALL"]}}
  assert pod["terminationGracePeriodSeconds"] >= 60


def test_bucket_paths_are_set_in_one_place():
  settings = _kind("job.yaml", "ConfigMap")
  assert settings["data"]["JOB_DIR"].startswith("gs://") and settings["data"]["DATA_DIR"].startswith("gs://")
  args = " ".join(_kind("job.yaml", "Job")["spec"]["template"]["spec"]["containers"][0]["args"])
  assert "--job-dir=$(JOB_DIR)" in args and "--data-dir=$(DATA_DIR)" in args
  assert "gs://" not in args
  account = _kind("job.yaml", "ServiceAccount")
  assert "iam.gke.io/gcp-service-account" in account["metadata"]["annotations"]
  # TensorBoard reads the same JOB_DIR, as its own read-only service account.
  board = _kind("tensorboard.yaml", "Deployment")["spec"]["template"]["spec"]
  ref = board["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]
  assert (ref["name"], ref["key"]) == (settings["metadata"]["name"], "JOB_DIR")
  assert board["serviceAccountName"] == _kind("tensorboard.yaml", "ServiceAccount")["metadata"]["name"]
  assert board["serviceAccountName"] != account["metadata"]["name"]
  assert "--logdir=$(JOB_DIR)/logs" in board["containers"][0]["args"]


def test_dockerfile_is_hadolint_clean_and_runs_the_trainer_as_non_root():
  result = subprocess.run([_tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr
  text = open(os.path.join(REPO, "Dockerfile"), encoding="utf-8").read()
  entrypoint = re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1)
  assert json.loads(entrypoint) == ["python", "-m", "trainer.task"]
  user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
  assert user.split(":")[0] not in ("root", "0")
  assert re.search(r"^FROM \S+:\S+", text, re.M) and ":latest" not in text
  assert os.path.isfile(os.path.join(REPO, ".dockerignore"))
