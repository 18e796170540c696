"""Runs k8s/job.yaml's pods as local processes, as Kubernetes would start them.

No Kubernetes API server runs here, so this harness does the kubelet's part
for an Indexed Job, from the manifest itself:

* the container's command is the Dockerfile's ENTRYPOINT (the manifest gives
  only `args`), its environment comes from `env` (values, `fieldRef`,
  `configMapKeyRef`) and `envFrom` (the ConfigMap in the same file), plus what
  Kubernetes injects for an Indexed Job (`JOB_COMPLETION_INDEX`, `HOSTNAME`);
* `$(VAR)` references in args are expanded as Kubernetes expands them;
* each pod runs in its own network namespace with its own IP address, joined
  by a bridge, and resolves the headless Service's pod names
  (`<job>-<index>.<service>`) through that namespace's /etc/hosts. Every
  worker therefore listens on the manifest's own port, as on separate nodes.

The only values changed are the ones a user edits (the ConfigMap's bucket
paths), pointed at local directories because TensorFlow's gs:// file system
cannot reach an emulator (its endpoint is compiled in). A manifest whose pods mount
a PersistentVolumeClaim (overlays/cpu-dev, rendered by kustomize) needs no
such edit: the claim is a local directory, and paths under its mount point
map into it.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Optional

import yaml

from conftest import REPO
from standins import job_controller
from workers import Worker


def _run(*cmd: str) -> None:
  subprocess.run(cmd, check=True, capture_output=True)


def netns_available() -> bool:
  """True if this process may create network namespaces (root with iproute2)."""
  if os.geteuid() != 0 or not shutil.which("ip"):
    return False
  name = f"probe{secrets.token_hex(3)}"
  try:
    _run("ip", "netns", "add", name)
    _run("ip", "netns", "del", name)
    return True
  except (subprocess.CalledProcessError, OSError):
    return False


# Each PodNetwork's subnet, 10.250.N.0/24, is held by an exclusive lock on
# this file for N while the network lives, so that two networks up at once
# (in one test, in two pytest processes, two xdist workers, two engineers'
# runs on one machine) never share a subnet: two bridges with the same
# addresses would route one network's packets into the other.
_SUBNETS = range(100, 200)
# (Not under $TMPDIR, which differs between runs: the locks must be the machine's.)
_SUBNET_LOCK = "/tmp/cnn-trainer-podnetwork-10.250.{}.lock"


def _hold_a_subnet() -> tuple[int, int]:
  """(N, an open file descriptor holding N's lock) for a free 10.250.N.0/24."""
  for subnet in random.sample(_SUBNETS, len(_SUBNETS)):
    fd = os.open(_SUBNET_LOCK.format(subnet), os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return subnet, fd
    except BlockingIOError:
      os.close(fd)
  raise RuntimeError(f"every subnet 10.250.{_SUBNETS[0]}-{_SUBNETS[-1]}.0/24 is in use")


class PodNetwork:
  """One network namespace per pod on a private bridge, with /etc/hosts names."""

  def __init__(self, hostnames: list[list[str]]):
    """hostnames[i]: the names pod i answers to (all pods resolve all names)."""
    subnet, self._subnet_lock = _hold_a_subnet()
    # Interface and namespace names start with the subnet's number, which no
    # other live network has; the random byte sets them apart from what a
    # killed run may have left behind.
    self.tag = f"{subnet}{secrets.token_hex(1)}"
    self.bridge = f"ckb{self.tag}"
    self.namespaces, self.host_ends, self.addresses = [], [], []
    self._made: list[tuple[str, ...]] = []
    try:
      self._cmd("ip", "link", "add", self.bridge, "type", "bridge")
      self._made.append(("ip", "link", "del", self.bridge))
      self._cmd("ip", "link", "set", self.bridge, "up")
      # The host's own address on the bridge: services a test runs outside
      # the pods (a GCS emulator) listen here, as off-cluster services would.
      self.host_address = f"10.250.{subnet}.254"
      self._cmd("ip", "addr", "add", f"{self.host_address}/24", "dev", self.bridge)
      for i in range(len(hostnames)):
        ns, host_end, pod_end = f"ckn{self.tag}-{i}", f"ckh{self.tag}{i}", f"ckp{self.tag}{i}"
        address = f"10.250.{subnet}.{i + 1}"
        self._cmd("ip", "netns", "add", ns)
        self._made.append(("ip", "netns", "del", ns))
        self._cmd("ip", "link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        self._made.append(("ip", "link", "del", host_end))
        self._cmd("ip", "link", "set", pod_end, "netns", ns)
        self._cmd("ip", "link", "set", host_end, "master", self.bridge, "up")
        self._cmd("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", pod_end)
        self._cmd("ip", "-n", ns, "link", "set", pod_end, "up")
        self._cmd("ip", "-n", ns, "link", "set", "lo", "up")
        self.namespaces.append(ns)
        self.host_ends.append(host_end)
        self.addresses.append(address)
      # `ip netns exec NS` bind-mounts /etc/netns/NS/hosts over /etc/hosts.
      hosts = "127.0.0.1 localhost\n" + "".join(
          f"{address} {' '.join(names)}\n" for address, names in zip(self.addresses, hostnames))
      for ns in self.namespaces:
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        with open(f"/etc/netns/{ns}/hosts", "w", encoding="utf-8") as f:
          f.write(hosts)
    except BaseException:
      self.close()
      raise

  def _cmd(self, *cmd: str) -> None:
    _run(*cmd)

  def prefix(self, index: int) -> list[str]:
    return ["ip", "netns", "exec", self.namespaces[index]]

  def disconnect(self, index: int) -> None:
    """Pulls pod `index`'s cable: its packets vanish, with no reset (a lost node)."""
    _run("ip", "link", "set", self.host_ends[index], "down")

  def close(self) -> None:
    for cmd in reversed(self._made):
      subprocess.run(cmd, capture_output=True)
    for ns in self.namespaces:
      shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
    self._made = []
    if self._subnet_lock is not None:
      os.close(self._subnet_lock)  # releases the subnet
      self._subnet_lock = None


def _entrypoint() -> list[str]:
  with open(os.path.join(REPO, "Dockerfile"), encoding="utf-8") as f:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", f.read(), re.M)
  return json.loads(match.group(1))


def expand(value: str, env: dict[str, str]) -> str:
  """Kubernetes' $(VAR) expansion: defined names expand, $$ escapes, others stay."""
  return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


class IndexedJob:
  """The Indexed Job in a manifest file, ready to start pod by pod."""

  def __init__(self, path: Optional[str], settings: Optional[dict[str, str]] = None, *,
               text: Optional[str] = None, volumes: Optional[dict[str, str]] = None):
    """Reads the Job, its ConfigMaps and Services from `path`, or from `text`.

    Args:
      path: a manifest file (k8s/job.yaml); None with `text`.
      settings: ConfigMap values to override, by key.
      text: the manifests themselves, e.g. `kustomize build` output.
      volumes: a local directory for each PersistentVolumeClaim, by claim
        name: an environment value under its mount path maps into it.
    """
    if text is None:
      with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    self.config_maps = {d["metadata"]["name"]: dict(d.get("data", {}))
                        for d in docs if d["kind"] == "ConfigMap"}
    self.services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    (self.job,) = [d for d in docs if d["kind"] == "Job"]
    self.name = self.job["metadata"]["name"]
    self.pod_spec = self.job["spec"]["template"]["spec"]
    (self.container,) = self.pod_spec["containers"]
    self.completions = self.job["spec"]["completions"]
    self.uid = str(uuid.uuid4())  # the Job's metadata.uid: a new one per `kubectl apply`
    volumes = volumes or {}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in self.pod_spec.get("volumes", []) if "persistentVolumeClaim" in v}
    self.mounts = {m["mountPath"]: volumes[claims[m["name"]]]
                   for m in self.container.get("volumeMounts", [])
                   if m["name"] in claims and claims[m["name"]] in volumes}
    for name, values in (settings or {}).items():
      (config_map,) = [c for c in self.config_maps.values() if name in c]
      config_map[name] = values

  def hostnames(self, index: int) -> list[str]:
    subdomain = self.pod_spec["subdomain"]
    return [f"{self.name}-{index}.{subdomain}", f"{self.name}-{index}"]

  def env(self, index: int, pod_name: Optional[str] = None, pod_uid: Optional[str] = None,
          job_uid: Optional[str] = None, in_container: bool = False) -> dict[str, str]:
    """The container's environment in pod `index` (a fresh pod name and UID by default).

    Args:
      in_container: paths stay as the container sees them (the volume is
        mounted there); otherwise they map to the volume's local directory.
      pod_name: metadata.name, `JOB-INDEX-xxxxx` (the hostname stays JOB-INDEX).
      pod_uid: metadata.uid.
      job_uid: the Job's UID, the pod label batch.kubernetes.io/controller-uid
        (this IndexedJob's own `uid` by default).
    """
    job_uid = job_uid or self.uid
    pod_labels = {**self.job["spec"]["template"]["metadata"].get("labels", {}),
                  "batch.kubernetes.io/controller-uid": job_uid, "controller-uid": job_uid,
                  "batch.kubernetes.io/job-name": self.name, "job-name": self.name,
                  "batch.kubernetes.io/job-completion-index": str(index)}
    fields = {"metadata.name": pod_name or job_controller.pod_name(self.name, index),
              "metadata.uid": pod_uid or str(uuid.uuid4())}
    env = {"JOB_COMPLETION_INDEX": str(index), "HOSTNAME": f"{self.name}-{index}"}
    for source in self.container.get("envFrom", []):
      env.update(self.config_maps[source["configMapRef"]["name"]])
    for var in self.container.get("env", []):
      if "value" in var:
        env[var["name"]] = expand(str(var["value"]), env)
        continue
      ref = var["valueFrom"]
      if "fieldRef" in ref:
        path = ref["fieldRef"]["fieldPath"]
        label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
        env[var["name"]] = pod_labels[label.group(1)] if label else fields[path]
      elif "configMapKeyRef" in ref:
        env[var["name"]] = self.config_maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
      else:
        raise NotImplementedError(f"env source {ref} is not simulated")
    return env if in_container else {name: self.local(value) for name, value in env.items()}

  def local(self, path: str) -> str:
    """A path in the container as the local one it maps to (unchanged if not on a volume)."""
    for mount, local in self.mounts.items():
      if path == mount or path.startswith(mount.rstrip("/") + "/"):
        return local + path[len(mount.rstrip("/")):]
    return path

  def args(self, env: dict[str, str]) -> list[str]:
    """The container's args, `$(VAR)`s expanded (the image's ENTRYPOINT comes first)."""
    return [expand(a, env) for a in self.container.get("args", [])]

  def argv(self, index: int, env: Optional[dict[str, str]] = None) -> list[str]:
    command = self.container.get("command") or _entrypoint()
    env = env or self.env(index)
    argv = [expand(a, env) for a in command + self.container.get("args", [])]
    if argv[:2] == ["tini", "--"]:
      # The image's init, there because the container's main process is PID 1;
      # here the pod's process is an ordinary child (tests/test_container.py
      # runs the image itself).
      argv = argv[2:]
    # The image's `python` is the venv's here.
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]

  def start_pod(self, network: PodNetwork, tmpdir: str, index: int,
                extra_args: Optional[list[str]] = None, pod_name: Optional[str] = None,
                pod_uid: Optional[str] = None, job_uid: Optional[str] = None) -> Worker:
    """Starts pod `index` as a process in its namespace (see `env` for the names)."""
    tmp = os.path.join(tmpdir, f"pod{index}")
    os.makedirs(tmp, exist_ok=True)
    pod_env = self.env(index, pod_name, pod_uid, job_uid)
    env = {**os.environ, **pod_env, "TMPDIR": tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CONFIG", None)
    return Worker(f"pod {pod_env.get('HOSTNAME')}",
                  network.prefix(index) + self.argv(index, pod_env) + list(extra_args or []), env)

  def launcher(self, network: PodNetwork, tmpdir: str, extra_args: Optional[list[str]] = None):
    """`launch` for standins.job_controller.JobController: starts its pods here."""
    return lambda pod: self.start_pod(network, tmpdir, pod.index, extra_args, pod.name, pod.uid,
                                      pod.labels["batch.kubernetes.io/controller-uid"])

  def start(self, network: PodNetwork, tmpdir: str, extra_args: Optional[list[str]] = None,
            indices: Optional[list[int]] = None) -> list[Worker]:
    """Starts the pods (all indices by default) as processes in their namespaces."""
    return [self.start_pod(network, tmpdir, i, extra_args)
            for i in (indices if indices is not None else range(self.completions))]


class ServingDeployment:
  """k8s/serving.yaml's pod, its containers run as the kubelet would run them.

  The `tf-serving` container's own command and args start the TF Serving
  stand-in (tests/standins/tfserving), which parses them as
  tensorflow_model_server does; `start_proxy` runs the `proxy` container's
  command in the real nginx (Debian's), on the nginx.conf of the ConfigMap it
  mounts. The ConfigMaps' files are written where the pod would mount them,
  and `edit_config` updates them as the kubelet does after `kubectl apply`.
  What is mapped, and why:
  * each volume -> one local folder, shared by every container that mounts
    it (as the pod's emptyDir is); a mount path -> its volume's folder (no
    root file system of our own); gs://BUCKET/ base paths -> a local folder
    (no GCS for TensorFlow here);
  * every listening port -> a free port on 127.0.0.1, because every test
    shares one network namespace: the manifest's container ports and the
    ports in nginx.conf (`listen`, `proxy_pass`). Probes resolve the
    manifest's named ports through that map.
  """

  SERVER, PROXY = "tf-serving", "proxy"

  def __init__(self, path: str, tmpdir: str):
    with open(path, encoding="utf-8") as f:
      docs = [d for d in yaml.safe_load_all(f) if d]
    self.config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    (self.deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    self.pod = self.deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in self.pod["containers"]}
    self.container = containers[self.SERVER]
    self.proxy_container = containers.get(self.PROXY)
    self.tmpdir = tmpdir
    self.bucket = os.path.join(tmpdir, "bucket")
    os.makedirs(self.bucket)
    # A short root: a Unix socket's path must fit in 107 bytes (sun_path).
    self.root = tempfile.mkdtemp(prefix="pod", dir="/tmp")
    os.chmod(self.root, 0o755)  # mkdtemp's 0700 would keep the proxy's user out
    self.volumes: dict[str, str] = {}  # volume name -> local folder
    for volume in self.pod["volumes"]:
      local = os.path.join(self.root, volume["name"])
      os.makedirs(local)
      os.chmod(local, 0o777)  # the emptyDir is the pod user's; here the proxy's user writes it
      self.volumes[volume["name"]] = local
      source = volume.get("configMap")
      for name, text in (self.config_maps[source["name"]] if source else {}).items():
        self._write(os.path.join(local, name), text)
    self.mounts = self._mounts(self.container)  # mountPath -> local folder, for the server
    self.ports = {p["name"]: p["containerPort"] for c in self.pod["containers"] for p in c.get("ports", [])}
    self.port_map: dict[int, int] = {}  # a port of the pod -> the local one
    self.server = None
    self.proxy: Optional[subprocess.Popen] = None

  def _mounts(self, container: dict) -> dict[str, str]:
    return {m["mountPath"]: self.volumes[m["name"]] for m in container.get("volumeMounts", [])}

  @staticmethod
  def _write(path: str, text: str) -> None:
    # The kubelet swaps a ConfigMap volume's files atomically (a symlink swap).
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(path + ".tmp", path)

  def local(self, path: str, mounts: Optional[dict[str, str]] = None) -> str:
    """A path in a container (the server's by default), or a gs://BUCKET/ URI, as the local file it maps to."""
    if path.startswith("gs://"):
      return os.path.join(self.bucket, path[len("gs://"):].split("/", 1)[1])
    for mount, local in (self.mounts if mounts is None else mounts).items():
      if path == mount or path.startswith(mount + "/"):
        return local + path[len(mount):]
    return path

  def set_flags(self, flags: dict[str, str]) -> None:
    """Sets these of the server's `--name=value` args (e.g. shorter polls), as editing the
    manifest would: an arg already there keeps its place with the new value, others are added."""
    args = self.container["args"]
    names = [a.split("=", 1)[0] for a in args]
    self.container["args"] = ([f"{n}={flags[n]}" if n in flags else a for n, a in zip(names, args)]
                              + [f"{n}={v}" for n, v in flags.items() if n not in names])

  def argv(self) -> list[str]:
    """The container's args, with mounted paths mapped (the command is checked)."""
    assert self.container["command"] == ["/usr/bin/tensorflow_model_server"], self.container["command"]
    args = []
    for arg in self.container["args"]:
      name, eq, value = arg.partition("=")
      args.append(f"{name}={self.local(value)}" if eq and value.startswith("/") else arg)
    return args

  def _free_port(self, port: int) -> int:
    if port not in self.port_map:
      with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        self.port_map[port] = s.getsockname()[1]
    return self.port_map[port]

  def start(self):
    """Starts the server (on a thread, as the container starts); returns it."""
    from standins.tfserving import ModelServer  # pylint: disable=import-outside-toplevel
    from standins.tfserving import flags as flags_lib  # pylint: disable=import-outside-toplevel
    flags = flags_lib.parse(self.argv())
    ports = [p for p in (flags.port, flags.rest_api_port) if p]
    self.server = ModelServer(self.argv(), local_path=self.local,
                              port_map={port: self._free_port(port) for port in ports})
    return self.server.start()

  def local_port(self, port) -> Optional[int]:
    """The local port a manifest port (a name or a number) maps to."""
    number = self.ports.get(port, port)
    assert number in self.port_map, f"port {port} is not one the pod listens on"
    return self.port_map[number]

  def probe(self, kind: str, container: Optional[str] = None) -> bool:
    """Runs a container's (the server's by default) startupProbe / readinessProbe / livenessProbe once."""
    import urllib.error  # pylint: disable=import-outside-toplevel
    import urllib.request  # pylint: disable=import-outside-toplevel
    spec = (self.proxy_container if container == self.PROXY else self.container)[f"{kind}Probe"]
    if "httpGet" in spec:
      port = self.local_port(spec["httpGet"]["port"])
      try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{spec['httpGet']['path']}",
                                    timeout=spec.get("timeoutSeconds", 1)) as response:
          return 200 <= response.status < 400  # Kubernetes' success range
      except (urllib.error.URLError, OSError):
        return False
    port = self.local_port(spec["tcpSocket"]["port"])
    try:
      socket.create_connection(("127.0.0.1", port), timeout=spec.get("timeoutSeconds", 1)).close()
      return True
    except OSError:
      return False

  # --- The proxy container -----------------------------------------------------

  def proxy_config(self) -> str:
    """The proxy's nginx.conf, from its ConfigMap as mounted, with ports and paths mapped.

    Every `listen` (an address becomes 127.0.0.1; the port a free one),
    every `proxy_pass` to 127.0.0.1 (the port the server's REST API got) and
    every absolute path (through the proxy container's mounts) is mapped;
    anything else stays as shipped. A listen or path this cannot map fails
    the test rather than run a config that differs from the manifest's.
    """
    command = self.proxy_container["command"]
    conf_path = command[command.index("-c") + 1]
    mounts = self._mounts(self.proxy_container)
    with open(self.local(conf_path, mounts), encoding="utf-8") as f:
      text = f.read()

    def listen(match):
      address, port = match.group(2) or "", int(match.group(3))
      assert address in ("", "127.0.0.1:"), f"nginx listens on {address}{port}: only all or loopback are mapped"
      return f"{match.group(1)}127.0.0.1:{self._free_port(port)}"

    text, listens = re.subn(r"(\blisten\s+)((?:127\.0\.0\.1:)?)(\d+)", listen, text)
    assert listens, "nginx.conf listens on nothing"
    text = re.sub(r"(http://127\.0\.0\.1:)(\d+)", lambda m: m.group(1) + str(self._free_port(int(m.group(2)))),
                  text)

    def path(match):
      local = self.local(match.group(2), mounts)
      assert local != match.group(2), f"nginx.conf names {match.group(2)}, which the proxy does not mount"
      return match.group(1) + local

    # Absolute paths: after whitespace, "unix:" or a quote, never inside a URL or regex.
    text = re.sub(r"((?:^|[\s:'\"])(?<!http:)(?<!https:)(?<!grpc:))(/(?:tmp|run|etc|var)/[^\s;'\"]*)", path,
                  text, flags=re.M)
    return text

  def start_proxy(self, timeout: float = 30) -> subprocess.Popen:
    """Runs the proxy container's command in Debian's nginx, as a non-root user, until its ports answer."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.access(nginx, os.X_OK), "nginx is not installed (apt-get install nginx-light)"
    command = list(self.proxy_container["command"])
    assert command[0] == "nginx", command
    conf_index = command.index("-c") + 1
    conf = os.path.join(self.root, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as f:
      f.write(self.proxy_config())
    command[0], command[conf_index] = nginx, conf
    user = self.pod["securityContext"]["runAsUser"]
    group = self.pod["securityContext"]["runAsGroup"]
    os.chmod(conf, 0o644)
    if os.geteuid() == 0:
      # In the pod both containers run as the pod's user, which owns the
      # server's socket; here the server runs in the test's own process.
      if self.server and self.server.grpc_socket_path:
        os.chown(self.server.grpc_socket_path, user, group)
      kwargs = {"user": user, "group": group, "extra_groups": []}
    else:
      kwargs = {}
    self.proxy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, **kwargs)
    ports = [self.port_map[p["containerPort"]] for p in self.proxy_container["ports"]]
    deadline = time.monotonic() + timeout
    while True:
      assert self.proxy.poll() is None, f"nginx exited {self.proxy.returncode}: {self.proxy.stdout.read()}"
      try:
        for port in ports:
          socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return self.proxy
      except OSError:
        assert time.monotonic() < deadline, f"nginx did not open {ports} in {timeout} s"
        time.sleep(0.05)

  def proxy_target(self, port_name: str = "grpc") -> str:
    """host:port of a proxy container port, as a client in the cluster reaches it."""
    return f"127.0.0.1:{self.local_port(port_name)}"

  def operator_target(self) -> str:
    """host:port of the proxy's loopback-only listener (what `kubectl port-forward` reaches)."""
    (port,) = [int(p) for p in re.findall(r"listen\s+127\.0\.0\.1:(\d+)", self._shipped_proxy_config())]
    return f"127.0.0.1:{self.port_map[port]}"

  def _shipped_proxy_config(self) -> str:
    (text,) = [d["nginx.conf"] for d in self.config_maps.values() if "nginx.conf" in d]
    return text

  def read_config(self, name: str) -> str:
    with open(os.path.join(self.mounts_of(name), name), encoding="utf-8") as f:
      return f.read()

  def mounts_of(self, name: str) -> str:
    (local,) = [d for d in self.mounts.values() if os.path.exists(os.path.join(d, name))]
    return local

  def edit_config(self, name: str, text: str) -> None:
    """`kubectl apply` of an edited ConfigMap file, once the kubelet has synced it."""
    self._write(os.path.join(self.mounts_of(name), name), text)

  def stop(self) -> None:
    if self.proxy and self.proxy.poll() is None:
      self.proxy.terminate()
      try:
        self.proxy.wait(10)
      except subprocess.TimeoutExpired:
        self.proxy.kill()
        self.proxy.wait()
    if self.server:
      self.server.stop()
    shutil.rmtree(self.root, ignore_errors=True)
