"""The image built from the Dockerfile, run the way the manifests run it.

Every container here gets its settings from the rendered Kustomize output of
overlays/cpu-dev (the CPU image's overlay): the Job's args and environment,
the Deployment's command, securityContext, volumes and limits
(tests/container_harness.py says how each maps onto podman). Only what a user
edits changes: the image (the one just built), and the worker count where a
test runs one worker. The image is the CPU build of the same Dockerfile
(VARIANT=cpu); the GPU build differs only by the `gpu` extra
(docs/container.md).
"""

import json
import os
import shutil
import signal
import time

import pytest
import yaml

from conftest import NUM_TEST, REPO, latest_checkpoint
from container_harness import Container, Network, missing, run_options
from k8s_harness import IndexedJob, expand
from standins.job_controller import JobController
from test_kustomize import CPU_DEV, render

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

CLAIM = "cnn-trainer-data"
# Images for the mid-epoch SIGTERM: 125 steps at the preset's batch of 64, seconds of training
# in which the test signals the container after step 5 (the container cannot load the
# self-signalling hook of tests/faults.py: the image holds the package, not the tests).
MID_EPOCH_NUM_TRAIN = 8000


@pytest.fixture(scope="module")
def mid_epoch_tfds_dir(tmp_path_factory) -> str:
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets_mid_epoch"))
  synthetic.write_tfds("cifar10", data_dir, MID_EPOCH_NUM_TRAIN, NUM_TEST)
  return data_dir


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
  return [d for d in yaml.safe_load_all(render(REPO, CPU_DEV)) if d]


def _volume(tmp_path, tfds_dir) -> str:
  """The claim's volume, holding what docs/kubernetes.md has the user copy onto it."""
  volume = tmp_path / "volume"
  shutil.copytree(tfds_dir, volume / "tensorflow_datasets")
  # fsGroup 1000: the kubelet makes the volume writable for the pod's group.
  for root, dirs, files in os.walk(volume):
    for name in dirs + files + ["."]:
      os.chown(os.path.join(root, name), 1000, 1000)
  return str(volume)


def _one_worker(rendered: list[dict]) -> IndexedJob:
  """The Job with one worker, as a user who sets the overlay's worker count to 1."""
  docs = json.loads(json.dumps(rendered))
  (job,) = [d for d in docs if d["kind"] == "Job"]
  job["spec"]["completions"] = job["spec"]["parallelism"] = 1
  for var in job["spec"]["template"]["spec"]["containers"][0]["env"]:
    if var["name"] == "TRAINER_NUM_WORKERS":
      var["value"] = "1"
  return IndexedJob(None, text=yaml.safe_dump_all(docs))


def _trainer(job: IndexedJob, network: Network, volume: str, index: int, extra=(), **pod):
  env = job.env(index, in_container=True, **pod)
  options = run_options(job.pod_spec, job.container, {CLAIM: volume})
  options += ["--network", network.name, "--hostname", f"{job.name}-{index}"]
  options += [f"--network-alias={name}" for name in job.hostnames(index)]
  return Container(f"{job.name}-{index}", options, env, job.args(env) + list(extra))


@pytest.fixture
def network():
  net = Network()
  yield net
  net.close()


def test_help_runs_under_the_jobs_security_settings(rendered, network, tmp_path):
  job = IndexedJob(None, text=yaml.safe_dump_all(rendered))
  env = job.env(0, in_container=True)
  options = run_options(job.pod_spec, job.container, {CLAIM: str(tmp_path)})
  container = Container("help", options, env, ["--help"])
  assert container.wait(60) == 0, container.log


def test_two_workers_find_each_other_train_and_export_onto_the_volume(
    rendered, network, tfds_dir, tmp_path):
  """The overlay's Job, two containers under the Job controller: they address each other by
  the Job's pod DNS names, train, and the chief publishes onto the volume as uid 1000."""
  volume = _volume(tmp_path, tfds_dir)
  job = IndexedJob(None, text=yaml.safe_dump_all(rendered), volumes={CLAIM: volume})
  assert job.completions == 2
  started = []

  def launch(pod):
    started.append(_trainer(job, network, volume, pod.index, ["--epochs", "1"], pod_name=pod.name,
                            pod_uid=pod.uid,
                            job_uid=pod.labels["batch.kubernetes.io/controller-uid"]))
    return started[-1]

  controller = JobController(job.job, launch, time_scale=0.01, uid=job.uid)
  try:
    controller.start()
    assert controller.wait(600) == "Complete", controller.describe() + "\n".join(
        c.log[-3000:] for c in started)
  finally:
    controller.stop()
    for container in started:
      container.kill()
  metrics_path = os.path.join(volume, "cnn-trainer", "cifar10", "metrics.json")
  with open(metrics_path, encoding="utf-8") as f:
    metrics = json.load(f)
  assert metrics["workers"] == 2 and metrics["export"]["version"] == 1
  assert os.stat(metrics_path).st_uid == 1000  # written by the manifest's user
  assert os.path.isfile(os.path.join(volume, "models", "cifar10", "1", "saved_model.pb"))


def test_sigterm_mid_epoch_saves_exits_143_and_the_rerun_resumes(
    rendered, network, mid_epoch_tfds_dir, tmp_path):
  volume = _volume(tmp_path, mid_epoch_tfds_dir)
  job = _one_worker(rendered)
  flags = ["--epochs", "1", "--log-every-steps", "5", "--steps-per-execution", "5"]
  spe = MID_EPOCH_NUM_TRAIN // 64
  first = _trainer(job, network, volume, 0, flags)
  try:
    first.wait_for(f"epoch 1/1 step 5/{spe}", timeout=180)
    first.signal(signal.SIGTERM)  # to the container's PID 1, as the kubelet sends it
    assert first.wait(120) == 143, first.log[-3000:]
  finally:
    first.kill()
  job_dir = os.path.join(volume, "cnn-trainer", "cifar10")
  step = int(latest_checkpoint(job_dir).split("-")[1])
  assert 5 <= step < spe
  rerun = _trainer(job, network, volume, 0, flags)
  try:
    assert rerun.wait(300) == 0, rerun.log[-3000:]
  finally:
    rerun.kill()
  with open(os.path.join(job_dir, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  assert metrics["resumed_from"]["step"] == step and metrics["steps_trained"] == spe - step


@pytest.mark.parametrize("after_s", [0.0, 0.5, 2.0])
def test_sigterm_at_container_start_is_honoured_at_once(
    rendered, network, tfds_dir, tmp_path, after_s):
  """Before the trainer has a handler, a SIGTERM to PID 1 would be dropped by the kernel;
  the image's init (tini) passes it on, and the process exits 143 within seconds."""
  volume = _volume(tmp_path, tfds_dir)
  job = _one_worker(rendered)
  container = _trainer(job, network, volume, 0)
  try:
    container.wait_running()
    time.sleep(after_s)
    sent = container.signal(signal.SIGTERM)
    assert container.wait(60) == 143, container.log[-3000:]
    assert container.exited_at - sent < 15, container.exited_at - sent
  finally:
    container.kill()


def _inside(container: Container, url: str) -> str:
  """GET `url` from inside the container's network namespace, where `kubectl port-forward`
  connects; the image's Python, as the Deployment's exec probes use it."""
  from container_harness import podman  # pylint: disable=import-outside-toplevel
  code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
  result = podman("exec", container.container_name, "python", "-c", code, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_tensorboard_deployment_answers_on_its_port_with_the_profile_plugin(
    rendered, network, tmp_path):
  """The Deployment's command, args and exec probes in the image: TensorBoard on the pod's
  loopback (what port-forward reaches), with the Profile plugin, reading the run on the volume."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from container_harness import podman  # pylint: disable=import-outside-toplevel
  (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
  config_maps = {d["metadata"]["name"]: d["data"] for d in rendered if d["kind"] == "ConfigMap"}
  pod_spec = deployment["spec"]["template"]["spec"]
  (board,) = pod_spec["containers"]
  env = {}
  for var in board["env"]:
    ref = var["valueFrom"]["configMapKeyRef"]
    env[var["name"]] = config_maps[ref["name"]][ref["key"]]
  volume = tmp_path / "volume"
  # A run's TensorBoard logs where the Deployment reads them: JOB_DIR/logs on the volume.
  logs = volume / os.path.relpath(env["JOB_DIR"], "/data") / "logs" / "train"
  with tf.summary.create_file_writer(str(logs)).as_default():
    tf.summary.scalar("loss", 1.0, step=1)
  options = run_options(pod_spec, board, {CLAIM: str(volume)}) + ["--network", network.name]
  server = Container("tensorboard", options, env, [expand(a, env) for a in board["args"]],
                     entrypoint=board["command"])
  port = next(a.split("=", 1)[1] for a in board["args"] if a.startswith("--port="))
  base = f"http://127.0.0.1:{port}"
  try:
    server.wait_running()
    probe = board["readinessProbe"]["exec"]["command"]
    deadline = time.time() + 90
    while podman("exec", server.container_name, *probe, check=False).returncode != 0:
      assert server.exited_at is None and time.time() < deadline, server.log[-3000:]
      time.sleep(1)
    liveness = board["livenessProbe"]["exec"]["command"]
    assert podman("exec", server.container_name, *liveness, check=False).returncode == 0
    listing = json.loads(_inside(server, f"{base}/data/plugins_listing"))
    assert "profile" in listing and "scalars" in listing
    deadline = time.time() + 60
    while "train" not in json.loads(_inside(server, f"{base}/data/runs")):
      assert time.time() < deadline, "TensorBoard never listed the run on the volume"
      time.sleep(1)
    sent = server.signal(signal.SIGTERM)
    assert server.wait(30) in (0, 143) and server.exited_at - sent < 10, server.log[-3000:]
  finally:
    server.kill()
