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
import subprocess

import pytest
import yaml

from conftest import REPO
from schemas import tool, validate
from trainer import errors

K8S = os.path.join(REPO, "k8s")


def _docs(name):
  with open(os.path.join(K8S, name), encoding="utf-8") as f:
    return [d for d in yaml.safe_load_all(f) if d]


def _kind(name, kind):
  (doc,) = [d for d in _docs(name) if d["kind"] == kind]
  return doc


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))
                                        if not p.endswith(("tfjob.yaml", "kustomization.yaml"))))
def test_manifest_is_valid_against_kubernetes_schemas(name):
  result = validate(os.path.join(K8S, name))
  assert result.returncode == 0, result.stdout + result.stderr
  assert "passed" in result.stdout and "WARN" not in result.stdout


def test_validator_rejects_unknown_fields(tmp_path):
  job = _kind("job.yaml", "Job")
  job["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # typo
  path = tmp_path / "job.yaml"
  path.write_text(yaml.safe_dump(job))
  result = validate(str(path))
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
  result = validate(str(path))
  assert result.returncode == 0, result.stdout + result.stderr
  # The rest of tfjob.yaml (its NetworkPolicy) has schemas: validate it as is.
  others = [d for d in _docs("tfjob.yaml") if d["kind"] != "TFJob"]
  assert [d["kind"] for d in others] == ["NetworkPolicy"]
  path = tmp_path / "tfjob-others.yaml"
  path.write_text(yaml.safe_dump_all(others))
  result = validate(str(path))
  assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout + result.stderr


def test_job_failure_policy_matches_the_exit_codes():
  spec = _kind("job.yaml", "Job")["spec"]
  by_code = [(r["action"], r["onExitCodes"]["operator"], r["onExitCodes"]["values"])
             for r in spec["podFailurePolicy"]["rules"] if "onExitCodes" in r]
  assert by_code == [("FailJob", "In", [errors.EXIT_USAGE]),          # bad input: no retry helps
                     ("Ignore", "In", [errors.EXIT_PREEMPTED]),       # SIGTERM, state saved
                     ("Ignore", "In", [errors.EXIT_PEER_LOST])]       # the peer's failure, not ours
  # Crashes and transient storage failures are counted (no rule matches them).
  matched = {code for _, _, codes in by_code for code in codes}
  assert not matched & {errors.EXIT_FAILURE, errors.EXIT_TRANSIENT, 137}
  container = spec["template"]["spec"]["containers"][0]["name"]
  assert all(r["onExitCodes"]["containerName"] == container
             for r in spec["podFailurePolicy"]["rules"] if "onExitCodes" in r)
  assert any(c.get("type") == "DisruptionTarget" for r in spec["podFailurePolicy"]["rules"]
             for c in r.get("onPodConditions", []))
  assert spec["podReplacementPolicy"] == "Failed"
  assert spec["backoffLimitPerIndex"] >= 1
  assert spec["template"]["spec"]["restartPolicy"] == "Never"


def _gke_allocatable(vcpus: int, memory_gib: float) -> tuple[float, float]:
  """CPU cores and GiB a GKE Standard node leaves to pods, by GKE's documented reservations.

  https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes#memory_and_cpu_reservations
  CPU: 6% of the first core, 1% of the next, 0.5% of the next 2, 0.25% above 4.
  Memory: 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of
  the next 112, 2% above 128, plus 100 MiB kept free for eviction.
  """
  cpu_tiers = [(1, 0.06), (1, 0.01), (2, 0.005), (float("inf"), 0.0025)]
  mem_tiers = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02)]

  def reserved(total, tiers):
    out, left = 0.0, total
    for size, rate in tiers:
      out += min(left, size) * rate
      left -= min(left, size)
    return out

  return vcpus - reserved(vcpus, cpu_tiers), memory_gib - reserved(memory_gib, mem_tiers) - 0.1


def _quantity(value: str) -> float:
  """A Kubernetes CPU (cores) or memory (GiB) quantity as a number."""
  units = {"Gi": 1.0, "Mi": 1 / 1024, "m": 1 / 1000}
  for suffix, factor in units.items():
    if str(value).endswith(suffix):
      return float(str(value)[:-len(suffix)]) * factor
  return float(value)


# What GKE's own DaemonSets request on a GPU node with Workload Identity
# (kube-proxy, fluentbit, gke-metadata-server, the NVIDIA device plugin, ...):
# kept free on top of the requests below. Generous on purpose.
DAEMONSET_CPU, DAEMONSET_GIB = 0.7, 1.5


@pytest.mark.parametrize("manifest", ["job.yaml", "tfjob.yaml"])
def test_trainer_pods_fit_the_smallest_l4_node(manifest):
  """g2-standard-4: 4 vCPU and 16 GB with one L4, the smallest L4 machine (docs/kubernetes.md, "Machine sizes")."""
  docs = [d for d in _docs(manifest) if d["kind"] in ("Job", "TFJob")]
  template = (docs[0]["spec"]["template"] if docs[0]["kind"] == "Job"
              else docs[0]["spec"]["tfReplicaSpecs"]["Worker"]["template"])
  resources = template["spec"]["containers"][0]["resources"]
  cpu, memory = _gke_allocatable(4, 16)
  assert round(cpu, 2) == 3.92 and round(memory, 1) == 13.3
  assert _quantity(resources["requests"]["cpu"]) + DAEMONSET_CPU <= cpu
  assert _quantity(resources["requests"]["memory"]) + DAEMONSET_GIB <= memory
  assert _quantity(resources["limits"]["memory"]) == _quantity(resources["requests"]["memory"])


def test_tfjob_recipe_applies_only_what_the_tfjob_shares_with_job_yaml():
  """`kubectl apply -f k8s/job.yaml -l cnn-trainer/shared=true` must not start the Job."""
  header = open(os.path.join(REPO, "k8s", "tfjob.yaml"), encoding="utf-8").read().split("apiVersion")[0]
  assert "kubectl apply -f k8s/job.yaml -l cnn-trainer/shared=true" in header
  selected = {(d["kind"], d["metadata"]["name"]) for d in _docs("job.yaml")
              if d["metadata"].get("labels", {}).get("cnn-trainer/shared") == "true"}
  pod = _kind("tfjob.yaml", "TFJob")["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
  needs = {("ServiceAccount", pod["serviceAccountName"])} | {
      ("ConfigMap", ref["configMapRef"]["name"]) for ref in pod["containers"][0]["envFrom"]}
  assert selected == needs


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
  result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr
  text = open(os.path.join(REPO, "Dockerfile"), encoding="utf-8").read()
  entrypoint = re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1)
  # tini as PID 1 forwards SIGTERM to the trainer (tests/test_container.py sends it).
  assert json.loads(entrypoint) == ["tini", "--", "python", "-m", "trainer.task"]
  user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
  assert user.split(":")[0] not in ("root", "0")
  assert re.search(r"^FROM \S+:\S+", text, re.M) and ":latest" not in text
  assert os.path.isfile(os.path.join(REPO, ".dockerignore"))


def _container_docs() -> str:
  return open(os.path.join(REPO, "docs", "container.md"), encoding="utf-8").read()


def test_ci_builds_the_cpu_image_with_the_docs_own_command():
  """docs/container.md's CPU build, run by .ci/build-image with podman and REGISTRY=localhost."""
  docs = _container_docs()
  builds = re.findall(r"^docker build (.*)$", docs, re.M)
  assert builds == ['--build-arg VARIANT=gpu -t "$REGISTRY/cnn-trainer:0.1.0" .',
                    '--build-arg VARIANT=cpu -t "$REGISTRY/cnn-trainer:0.1.0-cpu" .']
  pushes = re.findall(r"^docker push (.*)$", docs, re.M)
  assert pushes == ['"$REGISTRY/cnn-trainer:0.1.0"', '"$REGISTRY/cnn-trainer:0.1.0-cpu"']
  printed = subprocess.run(["bash", os.path.join(REPO, ".ci", "build-image")], capture_output=True,
                           text=True, env={**os.environ, "BUILD_IMAGE_PRINT": "1"}, timeout=60,
                           check=True).stdout.strip()
  assert printed.startswith("podman build --pull=never ")
  assert printed.endswith(" " + builds[1])
  # The tests run what CI built, under the name the cpu-dev overlay pulls.
  from container_harness import IMAGE  # pylint: disable=import-outside-toplevel
  assert IMAGE == "localhost/cnn-trainer:0.1.0-cpu" or os.environ.get("CNN_TRAINER_IMAGE")
  overlay = open(os.path.join(REPO, "overlays", "cpu-dev", "kustomization.yaml"),
                 encoding="utf-8").read()
  assert set(re.findall(r"^\s+image: (\S+)", overlay, re.M)) == {"localhost/cnn-trainer:0.1.0-cpu"}


def test_the_dockerfile_header_shows_the_docs_build_commands():
  text = open(os.path.join(REPO, "Dockerfile"), encoding="utf-8").read()
  for variant, tag in (("", "REGISTRY/cnn-trainer:0.1.0 "), ("--build-arg VARIANT=cpu ",
                                                              "REGISTRY/cnn-trainer:0.1.0-cpu ")):
    assert re.search(rf"^#\s+docker build {re.escape(variant)}-t {re.escape(tag)}\.", text, re.M)
  assert re.search(r"^ARG VARIANT=gpu$", text, re.M)
