"""What must hold without NetworkPolicy enforcement, and the check that tells whether a cluster enforces it.

A NetworkPolicy has no effect on a cluster whose network plugin does not
implement it, and the API server accepts it all the same
(https://kubernetes.io/docs/concepts/services-networking/network-policies/#prerequisites).
So TensorBoard (no login) listens on its pod's loopback only, its probes run
inside the container, and k8s/network-policy-check.yaml is a Job a user runs
to learn whether the policies hold. (TF Serving's reload protection is in
tests/test_serving_proxy.py.) TensorBoard runs here from the manifest's own
args; the check runs the manifest's own script.
"""

import os
import re
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import REPO
from schemas import tool

K8S = os.path.join(REPO, "k8s")


def _docs(name):
  with open(os.path.join(K8S, name), encoding="utf-8") as f:
    return [d for d in yaml.safe_load_all(f) if d]


def _tensorboard():
  (deployment,) = [d for d in _docs("tensorboard.yaml") if d["kind"] == "Deployment"]
  (container,) = deployment["spec"]["template"]["spec"]["containers"]
  return container


def _non_loopback_address():
  """An address of this machine other than loopback, as another pod would reach a pod's IP."""
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    try:
      s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
      address = s.getsockname()[0]
    except OSError:
      return None
  return None if address.startswith("127.") else address


def test_tensorboard_has_no_service_and_no_container_port():
  assert not [d for d in _docs("tensorboard.yaml") if d["kind"] == "Service"]
  assert "ports" not in _tensorboard()
  assert "--host=127.0.0.1" in _tensorboard()["args"]


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
  """TensorBoard started with the manifest's args: its --host, --port moved to a free one, a local logdir."""
  container = _tensorboard()
  # The image's init, then TensorBoard (tests/test_container.py runs it in the image).
  assert container["command"] == ["tini", "--", "tensorboard"]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  logdir = str(tmp_path_factory.mktemp("logs"))
  args = [a.replace("$(JOB_DIR)/logs", logdir) for a in container["args"]]
  args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
  exe = tool("tensorboard")
  proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  lines = []
  started = threading.Event()

  def read():
    for line in proc.stderr:
      lines.append(line)
      if re.match(r"TensorBoard \S+ at http://", line):
        started.set()
  threading.Thread(target=read, daemon=True).start()
  try:
    assert started.wait(120), "".join(lines)
    yield port
  finally:
    proc.terminate()
    proc.wait(30)


@pytest.mark.parametrize("kind", ["readiness", "liveness"])
def test_tensorboards_exec_probes_pass_inside_its_pod(tensorboard, kind):
  """The kubelet runs exec probes in the container, where 127.0.0.1 is TensorBoard."""
  command = _tensorboard()[f"{kind}Probe"]["exec"]["command"]
  assert command[0] == "python"
  command = [sys.executable, *[c.replace(":6006/", f":{tensorboard}/") for c in command[1:]]]
  assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def _listening_addresses(port):
  """The local addresses of the sockets listening on `port`, from the kernel's /proc/net/tcp{,6}."""
  addresses = set()
  for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table, encoding="ascii") as f:
      for line in f.readlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
          addresses.add(address)
  return addresses


def test_tensorboard_listens_on_loopback_only(tensorboard):
  """Another pod, policy or no policy, connects to the pod's IP: nothing listens there."""
  assert _listening_addresses(tensorboard) == {"0100007F"}  # 127.0.0.1, little-endian hex
  address = _non_loopback_address()
  if address is not None:  # and where this machine has another address, a connection there is refused
    with pytest.raises(ConnectionRefusedError):
      socket.create_connection((address, tensorboard), timeout=5).close()
  socket.create_connection(("127.0.0.1", tensorboard), timeout=5).close()  # where port-forward goes


# --- k8s/network-policy-check.yaml ---------------------------------------------

def _check():
  (job,) = [d for d in _docs("network-policy-check.yaml") if d["kind"] == "Job"]
  return job


def test_nothing_may_connect_to_the_check_pod():
  (policy,) = [d for d in _docs("network-policy-check.yaml") if d["kind"] == "NetworkPolicy"]
  labels = _check()["spec"]["template"]["metadata"]["labels"]
  assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
  assert policy["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in policy["spec"]


def _run_check(targets, timeout_s=1.0):
  (container,) = _check()["spec"]["template"]["spec"]["containers"]
  assert container["command"] == ["python", "-c"]
  env = {**os.environ, "CHECK_TARGETS": targets, "CHECK_TIMEOUT_S": str(timeout_s)}
  return subprocess.run([sys.executable, "-c", container["args"][0]], capture_output=True, text=True,
                        env=env, timeout=60)


def test_the_check_pod_carries_no_label_a_policy_allows():
  labels = _check()["spec"]["template"]["metadata"]["labels"]
  assert "cnn-trainer/tf-serving-client" not in labels
  assert labels.get("app.kubernetes.io/component") != "worker"
  targets = next(e["value"] for e in _check()["spec"]["template"]["spec"]["containers"][0]["env"]
                 if e["name"] == "CHECK_TARGETS")
  hosts = {t.strip().split(":")[:2][0] + ":" + t.strip().split(":")[1] for t in targets.split(",")}
  assert hosts == {"tf-serving:8500", "tf-serving:8501", "cnn-trainer-0.cnn-trainer-workers:2222",
                   "cnn-trainer-1.cnn-trainer-workers:2222"}


def test_the_check_fails_when_a_port_answers():
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    result = _run_check(f"127.0.0.1:{server.getsockname()[1]}:an open port")
  assert result.returncode == 1, result.stdout + result.stderr
  assert "REACHED  an open port" in result.stdout and "does not enforce NetworkPolicy" in result.stdout


def test_the_check_passes_when_every_connection_is_dropped():
  """A listener whose accept queue is full drops new SYNs, as a policy drops them: the connect times out."""
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; later connects hang
      filler = socket.socket()
      filler.setblocking(False)
      filler.connect_ex(("127.0.0.1", port))
      fillers.append(filler)
    try:
      result = _run_check(f"127.0.0.1:{port}:a dropped port,no-such-host.invalid:2222:a pod not running")
    finally:
      for filler in fillers:
        filler.close()
  assert result.returncode == 0, result.stdout + result.stderr
  assert "BLOCKED  a dropped port" in result.stdout and "SKIP     a pod not running" in result.stdout
  assert "the policies held" in result.stdout


def test_the_check_is_inconclusive_when_nothing_runs():
  result = _run_check("no-such-host.invalid:8500:TF Serving")
  assert result.returncode == 2 and "INCONCLUSIVE" in result.stdout
