"""checkov finds nothing unexplained in any manifest or the Dockerfile.

checkov (https://github.com/bridgecrewio/checkov) scans what the cluster and
docker get: every Kustomize overlay rendered by the real kustomize, the pods
shipped outside the kustomizations (the TFJob's pod template as a Pod, as
tests/test_manifests.py validates it, and the JobSet's likewise, the data loader, the network policy
check) and the Dockerfile. A finding is either fixed or skipped where it is
decided, with its reason: in the manifest's metadata.annotations
(`checkov.io/skipN: "CKV_K8S_NN=reason"`, checkov/kubernetes/kubernetes_utils.py
get_skipped_checks), or for the Dockerfile in .ci/checkov.yaml. So any new
finding fails here.

checkov pins its own dependencies, which clash with TensorFlow's, so it lives
in a virtual environment of its own (.ci/install-tools); CHECKOV names it, or
it is found on PATH or at .tools/checkov-venv.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO
from test_kustomize import CPU_DEV, GKE, JOB_KUEUE, JOBSET, JOBSET_KUEUE, KUEUE, ROLLOUT, render

CHECKOV_VERSION = "3.3.30"
CONFIG = os.path.join(REPO, ".ci", "checkov.yaml")


def _checkov() -> str:
  for path in (os.environ.get("CHECKOV"), shutil.which("checkov"),
               os.path.join(REPO, ".tools", "checkov-venv", "bin", "checkov")):
    if path and os.access(path, os.X_OK):
      version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120).stdout.strip()
      assert version == CHECKOV_VERSION, f"{path} is checkov {version}, not {CHECKOV_VERSION}"
      return path
  pytest.skip(f"needs checkov {CHECKOV_VERSION}: bash .ci/install-tools, or set CHECKOV to its executable")


def _tfjob_pod() -> str:
  """k8s/tfjob.yaml's pod template as a Pod (checkov has no TFJob kind), and its NetworkPolicy."""
  with open(os.path.join(REPO, "k8s", "tfjob.yaml"), encoding="utf-8") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
  (tfjob,) = [d for d in docs if d["kind"] == "TFJob"]
  template = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]
  pod = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "tfjob-worker", "namespace": tfjob["metadata"]["namespace"], **template["metadata"]},
         "spec": {**template["spec"], "restartPolicy": "Never"}}
  return yaml.safe_dump_all([pod, *[d for d in docs if d["kind"] != "TFJob"]])


def _jobset_pods(text: str) -> str:
  """The rendered JobSet's worker pod template as a Pod (checkov has no JobSet kind), as _tfjob_pod does."""
  pods = []
  for doc in yaml.safe_load_all(text):
    if doc and doc["kind"] == "JobSet":
      for rjob in doc["spec"]["replicatedJobs"]:
        template = rjob["template"]["spec"]["template"]
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{doc['metadata']['name']}-{rjob['name']}",
                                  "namespace": doc["metadata"]["namespace"],
                                  "annotations": doc["metadata"].get("annotations", {}),
                                  **template["metadata"]},
                     "spec": template["spec"]})
  assert pods, "no JobSet rendered"
  return yaml.safe_dump_all(pods)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
  """One checkov run over everything (it starts slowly): {file name: its JSON report}."""
  checkov = _checkov()
  folder = tmp_path_factory.mktemp("checkov")
  jobset = render(REPO, JOBSET)
  inputs = {"gke.yaml": render(REPO, GKE), "cpu-dev.yaml": render(REPO, CPU_DEV), "tfjob-pod.yaml": _tfjob_pod(),
            "jobset.yaml": jobset, "jobset-pod.yaml": _jobset_pods(jobset), "job-kueue.yaml": render(REPO, JOB_KUEUE),
            "jobset-kueue.yaml": render(REPO, JOBSET_KUEUE), "kueue.yaml": render(REPO, KUEUE),
            "rollout.yaml": render(REPO, ROLLOUT)}
  for name in (os.path.join("k8s", "network-policy-check.yaml"), os.path.join(CPU_DEV, "data-loader.yaml"),
               "Dockerfile"):
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
      inputs[os.path.basename(name)] = f.read()
  for name, text in inputs.items():
    (folder / name).write_text(text)
  result = subprocess.run([checkov, "--directory", str(folder), "--framework", "kubernetes", "dockerfile",
                           "--config-file", CONFIG, "--output", "json", "--compact",
                           "--skip-download"],
                          capture_output=True, text=True, timeout=600,
                          # Offline: no guideline mapping download, no PyPI update check
                          # (checkov/common/util/env_vars_config.py); --skip-download: no external checks.
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"})
  assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: findings, read below
  reports = json.loads(result.stdout)
  reports = reports if isinstance(reports, list) else [reports]
  by_file = {name: {"failed": [], "skipped": [], "passed": 0} for name in inputs}
  for report in reports:
    for kind in ("failed", "skipped"):
      for check in report["results"].get(f"{kind}_checks", []):
        by_file[os.path.basename(check["file_path"])][kind].append(check)
    for check in report["results"].get("passed_checks", []):
      by_file[os.path.basename(check["file_path"])]["passed"] += 1
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
  return by_file


@pytest.mark.parametrize("name", ["gke.yaml", "cpu-dev.yaml", "tfjob-pod.yaml", "jobset.yaml", "jobset-pod.yaml",
                                  "job-kueue.yaml", "jobset-kueue.yaml", "kueue.yaml", "rollout.yaml",
                                  "network-policy-check.yaml",
                                  "data-loader.yaml", "Dockerfile"])
def test_no_unexplained_finding(scan, name):
  report = scan[name]
  # checkov knows no Kueue kind: kueue.yaml (a ResourceFlavor, ClusterQueue and LocalQueue)
  # only has to parse and raise nothing.
  assert report["passed"] > 0 or name == "kueue.yaml", f"checkov checked nothing in {name}"
  failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["failed"]]
  assert not failed, "fix these, or skip them where they are decided, with a reason:\n" + "\n".join(failed)
  for check in report["skipped"]:
    reason = check.get("check_result", {}).get("suppress_comment") or ""
    assert len(reason) > 15 and reason != "No comment provided", f"{check['check_id']} in {name}: {reason!r}"


def test_every_dockerfile_skip_says_why():
  with open(CONFIG, encoding="utf-8") as f:
    text = f.read()
  skipped = yaml.safe_load(text)["skip-check"]
  assert skipped, "nothing skipped: remove the config"
  for check in skipped:
    assert re.search(rf"^\s*# {re.escape(check)} \(.+\): \S", text, re.M), f"{check} has no reason in .ci/checkov.yaml"
