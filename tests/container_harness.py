"""Runs the built image as the manifests run it: podman, daemonless, with the pod's settings.

The image is built from the Dockerfile by .ci/build-image (docs/container.md)
and named by CNN_TRAINER_IMAGE (default `localhost/cnn-trainer:0.1.0-cpu`). What
a container gets is read from the rendered manifest, never written here:

* the image's own ENTRYPOINT (the trainer's manifests give only `args`, the
  TensorBoard Deployment its `command`), `$(VAR)`s expanded as Kubernetes does;
* the environment the kubelet would inject (tests/k8s_harness.IndexedJob.env);
* securityContext: runAsUser/runAsGroup (`--user`), fsGroup (`--group-add`),
  readOnlyRootFilesystem (`--read-only`, with /var/tmp and /run read-only
  too, as in Kubernetes), allowPrivilegeEscalation false
  (`no-new-privileges`), capabilities (`--cap-drop`/`--cap-add`),
  seccomp RuntimeDefault (podman's default profile);
* volumes: an emptyDir becomes a tmpfs of its sizeLimit, writable by all as
  the kubelet makes it; a PersistentVolumeClaim a local directory;
* resources.limits: `--memory` and `--cpus`;
* the Job's pod DNS names (`<job>-<index>.<subdomain>`) as network aliases
  on a podman network of the test's own, so workers find each other by the
  names TF_CONFIG is derived from.

Nothing runs with more privilege than the manifest gives.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from typing import Optional

from conftest import REPO
from workers import Worker

# docs/container.md's CPU build with REGISTRY=localhost, what .ci/build-image runs.
IMAGE = os.environ.get("CNN_TRAINER_IMAGE", "localhost/cnn-trainer:0.1.0-cpu")
CONTAINERS_CONF = os.path.join(REPO, ".ci", "containers.conf")
BUILD = "bash .ci/build-image (it installs podman from Debian and builds the CPU image)"


def podman_env() -> dict[str, str]:
  return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
  return subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(),
                        check=check, timeout=timeout)


def missing() -> Optional[str]:
  """Why the container tests cannot run here, or None if they can."""
  if not shutil.which("podman"):
    return f"needs podman and the image {IMAGE}: {BUILD}"
  if os.geteuid() != 0:
    return "needs root for podman's container networks (run as root, as CI does)"
  if podman("image", "exists", IMAGE, check=False).returncode != 0:
    return f"needs the image {IMAGE}: {BUILD}"
  return None


def _quantity_bytes(value: str) -> int:
  """A Kubernetes memory quantity ("2Gi", "512Mi", "1G") in bytes."""
  match = re.fullmatch(r"(\d+)([KMGT]i?)?", str(value))
  number, unit = int(match.group(1)), match.group(2) or ""
  powers = {"K": 1, "M": 2, "G": 3, "T": 4}
  return number * ((1024 if unit.endswith("i") else 1000) ** powers[unit[0]] if unit else 1)


def _cpus(value: str) -> str:
  value = str(value)
  return str(int(value[:-1]) / 1000) if value.endswith("m") else value


def run_options(pod_spec: dict, container: dict, claims: dict[str, str]) -> list[str]:
  """podman run options for `container` of `pod_spec`, from the manifest alone.

  Args:
    claims: a local directory for each PersistentVolumeClaim, by claim name.
  """
  pod_sc, sc = pod_spec.get("securityContext", {}), container.get("securityContext", {})
  user, group = sc.get("runAsUser", pod_sc.get("runAsUser")), sc.get("runAsGroup",
                                                                     pod_sc.get("runAsGroup"))
  assert user not in (None, 0) or not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")), \
      "runAsNonRoot needs a non-zero runAsUser in the manifest"
  opts = ["--rm", "--pull=never"]
  if user is not None:
    opts += ["--user", f"{user}:{group if group is not None else user}"]
  if "fsGroup" in pod_sc:
    opts += ["--group-add", str(pod_sc["fsGroup"])]
  if sc.get("readOnlyRootFilesystem"):
    # Kubernetes leaves nothing writable but the volumes; podman's --read-only
    # alone keeps /var/tmp and /run writable.
    opts += ["--read-only", "--read-only-tmpfs=false"]
  if sc.get("allowPrivilegeEscalation") is False:
    opts += ["--security-opt", "no-new-privileges"]
  caps = sc.get("capabilities", {})
  opts += [f"--cap-drop={c}" for c in caps.get("drop", [])]
  opts += [f"--cap-add={c}" for c in caps.get("add", [])]
  seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
  assert seccomp in (None, "RuntimeDefault"), f"seccomp {seccomp} is not run here"
  volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
  for mount in container.get("volumeMounts", []):
    volume, path = volumes[mount["name"]], mount["mountPath"]
    read_only = mount.get("readOnly") or volume.get("persistentVolumeClaim", {}).get("readOnly")
    if "emptyDir" in volume:
      size = volume["emptyDir"].get("sizeLimit")
      opts += ["--mount", f"type=tmpfs,destination={path},tmpfs-mode=1777"
               + (f",tmpfs-size={_quantity_bytes(size)}" if size else "")]
    elif "persistentVolumeClaim" in volume:
      local = claims[volume["persistentVolumeClaim"]["claimName"]]
      opts += ["--volume", f"{local}:{path}:{'ro' if read_only else 'rw'}"]
    else:
      raise NotImplementedError(f"volume {volume} is not run here")
  limits = container.get("resources", {}).get("limits", {})
  if "memory" in limits:
    opts += ["--memory", str(_quantity_bytes(limits["memory"]))]
  if "cpu" in limits:
    opts += ["--cpus", _cpus(limits["cpu"])]
  return opts


class Network:
  """A podman network of the test's own; pods join it under their DNS names."""

  def __init__(self):
    self.name = f"cnn-test-{secrets.token_hex(3)}"
    podman("network", "create", self.name)

  def close(self):
    podman("network", "rm", "-f", self.name, check=False)


class Container(Worker):
  """A container run in the foreground: its output is the log, its exit code the pod's.

  `signal` sends to the container's PID 1 through the runtime (`podman kill`),
  as the kubelet's StopContainer does, once the container runs. `kill`
  removes the container itself, since a SIGKILL to podman would leave it
  running.
  """

  def __init__(self, name: str, options: list[str], env: dict[str, str], args: list[str],
               image: str = IMAGE, entrypoint: Optional[list[str]] = None):
    self.container_name = f"{name}-{secrets.token_hex(3)}"
    argv = ["podman", "run", "--name", self.container_name, *options]
    for key, value in sorted(env.items()):
      argv += ["--env", f"{key}={value}"]
    if entrypoint is not None:
      import json  # pylint: disable=import-outside-toplevel
      argv += ["--entrypoint", json.dumps(entrypoint)]
    super().__init__(name, [*argv, image, *args], podman_env())

  def wait_running(self, timeout: float = 60) -> float:
    """Blocks until the container's main process runs; returns the time it was seen so."""
    import time  # pylint: disable=import-outside-toplevel
    deadline = time.time() + timeout
    while time.time() < deadline:
      state = podman("inspect", "--format", "{{.State.Running}}", self.container_name,
                     check=False)
      if state.stdout.strip() == "true":
        return time.time()
      assert self.exited_at is None, f"{self.name} exited before it ran:\n{self.log[-3000:]}"
      time.sleep(0.05)
    raise AssertionError(f"{self.name} did not start within {timeout} s")

  def signal(self, sig: int) -> float:
    import time  # pylint: disable=import-outside-toplevel
    self.wait_running()
    podman("kill", "--signal", str(int(sig)), self.container_name)
    return time.time()

  def kill(self):
    podman("rm", "--force", "--time", "0", self.container_name, check=False)
    super().kill()
