"""Every pod this repository ships is admitted in a namespace under the "restricted" Pod Security Standard.

k8s/namespace.yaml labels the namespace pod-security.kubernetes.io/enforce:
restricted, so the API server refuses any pod that fails one of the
restricted level's checks. tests/standins/pod_security.py evaluates them as
kubernetes/pod-security-admission's policy/check_*.go do; the first part pins
each check to its rule, the second renders every Kustomize overlay with the
real kustomize and checks every pod it creates, and the pods shipped outside
the kustomizations (the TFJob, the data loader, the network policy check).
"""

import copy
import glob
import os

import pytest
import yaml

from conftest import REPO
from standins import pod_security as pss
from test_kustomize import CPU_DEV, ROLLOUT, TRAINING, render

ADMITTED = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "i", "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def _with(change):
  spec = copy.deepcopy(ADMITTED)
  change(spec)
  return spec


def _container(spec):
  return spec["containers"][0]


def test_a_minimal_restricted_pod_is_admitted():
  assert pss.violations(ADMITTED) == {}


@pytest.mark.parametrize("check, change", [
    ("hostNamespaces", lambda s: s.update(hostNetwork=True)),
    ("privileged", lambda s: _container(s)["securityContext"].update(privileged=True)),
    ("capabilities_baseline", lambda s: _container(s)["securityContext"]["capabilities"].update(add=["NET_RAW"])),
    ("capabilities_restricted", lambda s: _container(s)["securityContext"]["capabilities"].update(add=["CHOWN"])),
    ("capabilities_restricted", lambda s: _container(s)["securityContext"].pop("capabilities")),
    ("hostPathVolumes", lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}})),
    ("restrictedVolumes", lambda s: s["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}})),
    ("hostPorts", lambda s: _container(s).update(ports=[{"containerPort": 80, "hostPort": 80}])),
    ("hostProbesAndhostLifecycle",
     lambda s: _container(s).update(readinessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}})),
    ("appArmorProfile", lambda s: s["securityContext"].update(appArmorProfile={"type": "Unconfined"})),
    ("seLinuxOptions", lambda s: s["securityContext"].update(seLinuxOptions={"user": "root"})),
    ("procMount", lambda s: _container(s)["securityContext"].update(procMount="Unmasked")),
    ("seccompProfile_baseline", lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"})),
    ("seccompProfile_restricted", lambda s: s["securityContext"].pop("seccompProfile")),
    ("sysctls", lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
    ("windowsHostProcess", lambda s: s["securityContext"].update(windowsOptions={"hostProcess": True})),
    ("allowPrivilegeEscalation", lambda s: _container(s)["securityContext"].pop("allowPrivilegeEscalation")),
    ("runAsNonRoot", lambda s: s["securityContext"].pop("runAsNonRoot")),
    ("runAsUser", lambda s: _container(s)["securityContext"].update(runAsUser=0)),
])
def test_each_check_refuses_what_its_rule_forbids(check, change):
  assert check in pss.violations(_with(change))


def test_container_level_settings_may_stand_in_for_the_pod_level_ones():
  """runAsNonRoot and seccompProfile may be set in every container instead (check_runAsNonRoot.go)."""
  def per_container(spec):
    spec["securityContext"] = {}
    _container(spec)["securityContext"].update(runAsNonRoot=True, seccompProfile={"type": "Localhost",
                                                                                  "localhostProfile": "p"})
  assert pss.violations(_with(per_container)) == {}
  # ... and an init container is checked like the others.
  assert "allowPrivilegeEscalation" in pss.violations(_with(lambda s: s.update(
      initContainers=[{"name": "init", "image": "i", "securityContext": {"capabilities": {"drop": ["ALL"]}}}])))


def test_a_user_namespace_relaxes_run_as_non_root_and_run_as_user_only():
  spec = _with(lambda s: (s.update(hostUsers=False), s["securityContext"].pop("runAsNonRoot"),
                          s["securityContext"].update(runAsUser=0)))
  assert pss.violations(spec) == {}


def _rendered_pods():
  for overlay in (*TRAINING, ROLLOUT):
    for doc in yaml.safe_load_all(render(REPO, overlay)):
      for name, metadata, spec in pss.pod_templates(doc or {}):
        yield f"{overlay}: {name}", metadata, spec


def _shipped_pods():
  """Pods shipped outside the kustomizations: the TFJob, the data loader, the network policy check."""
  paths = [os.path.join(REPO, "k8s", "tfjob.yaml"), os.path.join(REPO, "k8s", "network-policy-check.yaml"),
           *sorted(glob.glob(os.path.join(REPO, CPU_DEV, "data-loader.yaml")))]
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for doc in yaml.safe_load_all(f):
        for name, metadata, spec in pss.pod_templates(doc or {}):
          yield f"{os.path.relpath(path, REPO)}: {name}", metadata, spec


def test_every_pod_of_every_overlay_is_admitted_under_restricted():
  pods = list(_rendered_pods())
  names = {name for name, _, _ in pods}
  # The Job, TensorBoard and TF Serving on GKE; the Job and TensorBoard on cpu-dev; the
  # JobSet's workers, TensorBoard and TF Serving; each variant again under Kueue; GKE's
  # three and the rollout Job on overlays/rollout.
  assert len(names) == 3 + 2 + 3 + 3 + 3 + 4, names
  assert {name for name in names if "JobSet/" in name} == {
      f"{overlay}: JobSet/cnn-trainer/workers" for overlay in ("overlays/jobset", "overlays/jobset-kueue")}
  for name, metadata, spec in pods:
    assert pss.violations(spec, metadata) == {}, name


def test_every_pod_shipped_beside_them_is_admitted_under_restricted():
  pods = list(_shipped_pods())
  assert len(pods) == 3, [name for name, _, _ in pods]
  for name, metadata, spec in pods:
    assert pss.violations(spec, metadata) == {}, name


def test_the_namespace_enforces_audits_and_warns_restricted():
  with open(os.path.join(REPO, "k8s", "namespace.yaml"), encoding="utf-8") as f:
    (namespace,) = [d for d in yaml.safe_load_all(f) if d]
  labels = namespace["metadata"]["labels"]
  for mode in ("enforce", "audit", "warn"):
    assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"
