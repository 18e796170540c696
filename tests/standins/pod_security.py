"""The Pod Security Standard's "restricted" level, check by check, as the PodSecurity admission plugin runs it.

No API server runs here, so this evaluates a pod spec the way
kubernetes/pod-security-admission (the staging repository of
kubernetes/kubernetes: staging/src/k8s.io/pod-security-admission) does at its
newest version ("latest", what a namespace label without a -version selects):
every baseline check plus the restricted ones, each a function below named by
the CheckID it follows in policy/check_<ID>.go. A check returns the reasons
the pod is refused (empty: allowed). The plugin checks
spec.initContainers, spec.containers and spec.ephemeralContainers alike
(policy/visitor.go, visitContainers).

The admission plugin reads the pod spec of a workload's template only to warn
(audit and warn modes on Deployments and Jobs); the pods it refuses are the
ones the controllers then create from that template, so evaluating the
template is evaluating the pods.
"""

from __future__ import annotations

from typing import Any, Callable

Spec = dict[str, Any]


def _containers(spec: Spec):
  """policy/visitor.go visitContainers: init, regular and ephemeral containers."""
  for key in ("initContainers", "containers", "ephemeralContainers"):
    for container in spec.get(key) or []:
      yield container


def _security(obj: dict) -> dict:
  return obj.get("securityContext") or {}


def _user_namespace(spec: Spec) -> bool:
  """hostUsers: false puts the pod in a user namespace, which relaxes three checks (v1.35+)."""
  return spec.get("hostUsers") is False


# --- Baseline -----------------------------------------------------------------

def host_namespaces(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_hostNamespaces.go: hostNetwork, hostPID, hostIPC undefined or false."""
  return [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]


def privileged(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_privileged.go: securityContext.privileged false or undefined."""
  return [f"{c['name']}: privileged" for c in _containers(spec) if _security(c).get("privileged")]


BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def capabilities_baseline(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_capabilities_baseline.go: capabilities.add only from the default set."""
  return [f"{c['name']}: adds {cap}" for c in _containers(spec)
          for cap in (_security(c).get("capabilities") or {}).get("add") or []
          if cap not in BASELINE_CAPABILITIES]


def host_path_volumes(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_hostPathVolumes.go: no hostPath volume."""
  return [f"volume {v['name']}: hostPath" for v in spec.get("volumes") or [] if "hostPath" in v]


def host_ports(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_hostPorts.go: ports[*].hostPort undefined or 0."""
  return [f"{c['name']}: hostPort {p['hostPort']}" for c in _containers(spec)
          for p in c.get("ports") or [] if p.get("hostPort")]


def host_probes_and_host_lifecycle(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_hostProbesAndhostLifecycle.go: no `host` in probes' httpGet/tcpSocket or lifecycle handlers."""
  refused = []
  for c in _containers(spec):
    handlers = {f"{kind}Probe": c.get(f"{kind}Probe") for kind in ("liveness", "readiness", "startup")}
    handlers.update({f"lifecycle.{k}": v for k, v in (c.get("lifecycle") or {}).items()})
    for where, handler in handlers.items():
      for action in ("httpGet", "tcpSocket"):
        if (handler or {}).get(action, {}).get("host"):
          refused.append(f"{c['name']}: {where}.{action}.host")
  return refused


def app_armor_profile(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_appArmorProfile.go: RuntimeDefault, Localhost or undefined (fields and annotations)."""
  refused = []
  for key, value in (metadata.get("annotations") or {}).items():
    if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value and \
        value != "runtime/default" and not value.startswith("localhost/"):
      refused.append(f"annotation {key}={value}")
  for obj in [spec, *_containers(spec)]:
    kind = (_security(obj).get("appArmorProfile") or {}).get("type")
    if kind not in (None, "RuntimeDefault", "Localhost"):
      refused.append(f"{obj.get('name', 'pod')}: appArmorProfile {kind}")
  return refused


def se_linux_options(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_seLinuxOptions.go: type only container_t/container_init_t/container_kvm_t; no user or role."""
  refused = []
  for obj in [spec, *_containers(spec)]:
    options = _security(obj).get("seLinuxOptions") or {}
    if options.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
      refused.append(f"{obj.get('name', 'pod')}: seLinuxOptions.type {options['type']}")
    refused += [f"{obj.get('name', 'pod')}: seLinuxOptions.{k}" for k in ("user", "role") if options.get(k)]
  return refused


def proc_mount(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_procMount_baseline.go: Default or undefined, unless in a user namespace."""
  if _user_namespace(spec):
    return []
  return [f"{c['name']}: procMount {_security(c)['procMount']}" for c in _containers(spec)
          if _security(c).get("procMount") not in (None, "Default")]


def seccomp_profile_baseline(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_seccompProfile_baseline.go: RuntimeDefault, Localhost or undefined."""
  return [f"{obj.get('name', 'pod')}: seccompProfile {kind}" for obj in [spec, *_containers(spec)]
          if (kind := (_security(obj).get("seccompProfile") or {}).get("type")) not in
          (None, "RuntimeDefault", "Localhost")]


SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
                "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
                "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}


def sysctls(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_sysctls.go: only the safe set (sysctlsAllowedV1Dot37)."""
  return [f"sysctl {s['name']}" for s in _security(spec).get("sysctls") or [] if s["name"] not in SAFE_SYSCTLS]


def windows_host_process(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_windowsHostProcess.go: windowsOptions.hostProcess undefined or false."""
  return [f"{obj.get('name', 'pod')}: hostProcess" for obj in [spec, *_containers(spec)]
          if (_security(obj).get("windowsOptions") or {}).get("hostProcess")]


# --- Restricted ---------------------------------------------------------------

RESTRICTED_VOLUME_SOURCES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                             "persistentVolumeClaim", "projected", "secret", "image"}


def restricted_volumes(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_restrictedVolumes.go: only the listed inline volume sources."""
  refused = []
  for volume in spec.get("volumes") or []:
    sources = set(volume) - {"name"}
    refused += [f"volume {volume['name']}: {s}" for s in sorted(sources - RESTRICTED_VOLUME_SOURCES)]
  return refused


def allow_privilege_escalation(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_allowPrivilegeEscalation.go: every container sets it to false (undefined is refused)."""
  return [f"{c['name']}: allowPrivilegeEscalation != false" for c in _containers(spec)
          if _security(c).get("allowPrivilegeEscalation") is not False]


def run_as_non_root(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_runAsNonRoot.go: true at pod level (containers may leave it unset) or in every container."""
  if _user_namespace(spec):
    return []
  pod = _security(spec).get("runAsNonRoot")
  refused = ["pod: runAsNonRoot=false"] if pod is False else []
  for c in _containers(spec):
    value = _security(c).get("runAsNonRoot")
    if value is False or (value is None and pod is not True):
      refused.append(f"{c['name']}: runAsNonRoot != true")
  return refused


def run_as_user(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_runAsUser.go: runAsUser never 0 (pod or container)."""
  if _user_namespace(spec):
    return []
  return [f"{obj.get('name', 'pod')}: runAsUser=0" for obj in [spec, *_containers(spec)]
          if _security(obj).get("runAsUser") == 0]


def seccomp_profile_restricted(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_seccompProfile_restricted.go: RuntimeDefault or Localhost, set on the pod or every container."""
  allowed = ("RuntimeDefault", "Localhost")
  pod = (_security(spec).get("seccompProfile") or {}).get("type")
  refused = [f"pod: seccompProfile {pod}"] if pod is not None and pod not in allowed else []
  for c in _containers(spec):
    kind = (_security(c).get("seccompProfile") or {}).get("type")
    if (kind is None and pod not in allowed) or (kind is not None and kind not in allowed):
      refused.append(f"{c['name']}: seccompProfile {kind or 'unset'}")
  return refused


def capabilities_restricted(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_capabilities_restricted.go: drop includes ALL; add at most NET_BIND_SERVICE."""
  refused = []
  for c in _containers(spec):
    caps = _security(c).get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
      refused.append(f"{c['name']}: does not drop ALL")
    refused += [f"{c['name']}: adds {cap}" for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
  return refused


def proc_mount_restricted(spec: Spec, metadata: dict) -> list[str]:
  """policy/check_procMount_restricted.go: Default or undefined, user namespace or not."""
  return [f"{c['name']}: procMount {_security(c)['procMount']}" for c in _containers(spec)
          if _security(c).get("procMount") not in (None, "Default")]


RESTRICTED: dict[str, Callable[[Spec, dict], list[str]]] = {
    # Baseline (the restricted level includes every baseline check).
    "hostNamespaces": host_namespaces,
    "privileged": privileged,
    "capabilities_baseline": capabilities_baseline,
    "hostPathVolumes": host_path_volumes,
    "hostPorts": host_ports,
    "hostProbesAndhostLifecycle": host_probes_and_host_lifecycle,
    "appArmorProfile": app_armor_profile,
    "seLinuxOptions": se_linux_options,
    "procMount": proc_mount,
    "seccompProfile_baseline": seccomp_profile_baseline,
    "sysctls": sysctls,
    "windowsHostProcess": windows_host_process,
    # Restricted.
    "restrictedVolumes": restricted_volumes,
    "allowPrivilegeEscalation": allow_privilege_escalation,
    "runAsNonRoot": run_as_non_root,
    "runAsUser": run_as_user,
    "seccompProfile_restricted": seccomp_profile_restricted,
    "capabilities_restricted": capabilities_restricted,
    "procMount_restricted": proc_mount_restricted,
}


def violations(spec: Spec, metadata: dict | None = None) -> dict[str, list[str]]:
  """{check ID: reasons} for every restricted-level check the pod fails; empty if it is admitted."""
  result = {}
  for check, function in RESTRICTED.items():
    reasons = function(spec, metadata or {})
    if reasons:
      result[check] = reasons
  return result


def pod_templates(doc: dict):
  """(name, metadata, pod spec) of each pod a manifest object creates: Pods, workloads, JobSet and TFJob replicas."""
  kind = doc.get("kind")
  name = f"{kind}/{doc['metadata']['name']}"
  if kind == "Pod":
    yield name, doc["metadata"], doc["spec"]
  elif kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
    template = doc["spec"]["template"]
    yield name, template.get("metadata") or {}, template["spec"]
  elif kind == "CronJob":
    template = doc["spec"]["jobTemplate"]["spec"]["template"]
    yield name, template.get("metadata") or {}, template["spec"]
  elif kind == "JobSet":  # each replicatedJob's Job template (jobset.x-k8s.io/v1alpha2)
    for rjob in doc["spec"]["replicatedJobs"]:
      template = rjob["template"]["spec"]["template"]
      yield f"{name}/{rjob['name']}", template.get("metadata") or {}, template["spec"]
  elif kind == "TFJob":
    for role, replica in doc["spec"]["tfReplicaSpecs"].items():
      yield f"{name}/{role}", replica["template"].get("metadata") or {}, replica["template"]["spec"]
