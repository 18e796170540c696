"""Multi-worker training with real worker processes talking gRPC.

Two kinds of cluster:
* TF_CONFIG on 127.0.0.1 (as Kubeflow or Vertex AI would set it): runs
  anywhere, and proves the fault tolerance (exit 129 when a peer is killed,
  143 on SIGTERM at a common step, resume from the checkpoint);
* k8s/job.yaml run as Kubernetes would run it (tests/k8s_harness.py): each
  pod a process in its own network namespace, addressed by the headless
  Service's DNS names, started with the manifest's own command line. These
  need root and iproute2; under CI=true a skip fails the run
  (tests/no_skips_in_ci.py). What the Job controller then does with each
  pod's exit is tests/test_job_scenarios.py's.
"""

import json
import os
import re
import signal
import time
import types

import pytest
import tensorflow as tf

from conftest import ACCURACY_BAR, NUM_TEST, NUM_TRAIN, REPO, latest_checkpoint
from faults import fired, signal_on_log
from k8s_harness import IndexedJob, PodNetwork, netns_available
from trainer import presets
from trainer import errors
from workers import lost_peer, start_cluster, stop_all, weights_fingerprint

# A dead peer must fail the others within these bounds (seconds). A killed
# process resets its connections (measured: under 1 s); a vanished node is
# caught by the coordination service's heartbeat (measured: 9-12 s).
PEER_KILLED_BOUND_S = 30
NODE_LOST_BOUND_S = 60
# Flags the fault tests add after the manifest's own: log every 5 steps so a
# test can act mid-epoch (the default logs every 100 steps).
MID_EPOCH_LOGGING = ["--log-every-steps", "5", "--steps-per-execution", "5"]
# The manifest trains with the preset's batch size.
SPE = NUM_TRAIN // presets.preset("cifar10").batch_size  # steps per epoch
EPOCHS = presets.preset("cifar10").epochs  # the manifest trains the preset's epochs

needs_netns = pytest.mark.skipif(
    not netns_available(), reason="needs root and iproute2 to create network namespaces")


# The tutorial CNN trains to the accuracy bar, and is profiled: the chief alone
# traces, and every worker cuts its calls at the window's edges as the chief
# does (a call is a collective). ResNet-20 (synchronised BatchNorm: its moving
# statistics must stay identical on every worker, which the fingerprint
# checks) runs briefly: 3 steps on 400 images.
@pytest.mark.parametrize("model_args, accuracy_bar", [
    (["--epochs", "6", "--profile-steps", "2,4"], ACCURACY_BAR),
    (["--model", "resnet20", "--epochs", "1", "--train-split", "train[:20%]"], 0.0),
], ids=["tutorial", "resnet20"])
def test_chief_and_two_workers_train_in_sync_and_only_the_chief_writes(tfds_dir, tmp_path, model_args,
                                                                       accuracy_bar):
  """Vertex-AI-style TF_CONFIG with a chief; each process gets its own job dir to prove who writes."""
  job_dirs = [str(tmp_path / f"job{i}") for i in range(3)]
  args = lambda i: ["--data-dir", tfds_dir, "--job-dir", job_dirs[i], *model_args,
                    "--batch-size", "126", *MID_EPOCH_LOGGING]
  workers = start_cluster(3, args, str(tmp_path), chief=True)
  try:
    codes = [w.wait(600) for w in workers]
  finally:
    stop_all(workers)
  assert codes == [0, 0, 0], "\n".join(w.log[-3000:] for w in workers)
  assert "3 workers (this is worker 0, the chief), 3 replicas" in workers[0].log
  assert "each of 3 workers reads its own shard" in workers[0].log
  assert len({weights_fingerprint(w.log) for w in workers}) == 1, "replicas diverged"
  metrics = json.load(open(os.path.join(job_dirs[0], "metrics.json")))
  assert metrics["workers"] == 3 and metrics["replicas"] == 3
  assert metrics["test_accuracy"] >= accuracy_bar and metrics["test_examples"] == NUM_TEST
  assert os.path.isfile(os.path.join(job_dirs[0], "export", "cifar10", "1", "saved_model.pb"))
  if "--profile-steps" in model_args:
    assert os.listdir(os.path.join(job_dirs[0], "logs", "train", "plugins", "profile"))
  for i in (1, 2):
    assert not os.path.exists(job_dirs[i]), f"worker {i} wrote to its job dir: {os.listdir(job_dirs[i])}"
    assert os.listdir(tmp_path / f"worker{i}") == [], f"worker {i} left temporary files"


# ------------------------------------------------- faults, TF_CONFIG on 127.0.0.1

# Worker 1 signals itself right after logging epoch 2's first logged step
# (tests/faults.py): global step 35, epoch 2's step 4, 27 steps before the
# epoch's checkpoint; and, in the rerun, inside the call after epoch 3's first
# (global step 65, epoch 3's step 3).
LOOPBACK_EPOCHS = 3
LOOPBACK_SPE = SPE
EARLY_STEP = 5 - LOOPBACK_SPE % 5  # --log-every-steps 5
EARLY_IN_EPOCH_2 = f"epoch 2/{LOOPBACK_EPOCHS} step {EARLY_STEP}/{LOOPBACK_SPE}"
IN_EPOCH_3 = f"epoch 3/{LOOPBACK_EPOCHS} step "


@pytest.fixture
def loopback(tfds_dir, tmp_path):
  """Starts 2-worker clusters on 127.0.0.1 that share one job dir, as a rerun would.

  `start(env)`: a cluster with `env` added (faults.signal_on_log's, on the folder
  `fault`; each rule acts once, so a later start runs on); `start()`: nothing added.
  """
  job_dir, fault = str(tmp_path / "job"), str(tmp_path / "fault")
  args = lambda i: ["--data-dir", tfds_dir, "--job-dir", job_dir,
                    "--epochs", str(LOOPBACK_EPOCHS), *MID_EPOCH_LOGGING]
  started = []

  def start(env=None):
    workers = start_cluster(2, args, str(tmp_path), extra_env=env)
    started.extend(workers)
    return workers

  yield types.SimpleNamespace(start=start, job_dir=job_dir, fault=fault)
  stop_all(started)


def test_loopback_sigterm_stops_every_worker_with_143_at_one_step_then_a_killed_worker_fails_its_peer_with_129(
    loopback):
  """SIGTERM to worker 1 early in epoch 2 (worker 0 is not told): both save at one step and
  exit 143, and the rerun resumes there on both. Then worker 1 dies (SIGKILL) inside a
  training call early in epoch 3: worker 0 fails with 129 within the bound, naming it, and
  the third run resumes from epoch 2's checkpoint, retraining the lost steps, to identical
  weights on both.

  One cluster for what were two (a kill mid-epoch 2 from scratch, and a SIGTERM and its
  rerun): the kill now lands in the SIGTERM's rerun. Its rule is added after the first run,
  so only the rerun's processes read it (the sitecustomize reads its rules at start-up).
  """
  fault, job_dir, spe = loopback.fault, loopback.job_dir, LOOPBACK_SPE
  workers = loopback.start(signal_on_log(fault, EARLY_IN_EPOCH_2, signal.SIGTERM, who=1))
  codes = [w.wait(300) for w in workers]
  assert codes == [errors.EXIT_PREEMPTED] * 2, "\n".join(w.log[-3000:] for w in workers)
  assert fired(fault, EARLY_IN_EPOCH_2)
  stops = {re.search(rf"stopped on SIGTERM at epoch 2, step (\d+)/{spe}", w.log).group(1)
           for w in workers}
  assert len(stops) == 1, f"the workers stopped at different steps: {stops}"
  step = int(stops.pop())
  assert EARLY_STEP <= step < spe
  assert latest_checkpoint(job_dir) == f"ckpt-{spe + step}"

  # The rerun: the same command on every worker, as a restart would, and one more rule.
  workers = loopback.start(signal_on_log(fault, IN_EPOCH_3, signal.SIGKILL, who=1, in_call=True))
  assert workers[1].wait(300) == -signal.SIGKILL, workers[1].log[-3000:]
  assert fired(fault, IN_EPOCH_3) and IN_EPOCH_3 in workers[1].log
  killed_at = workers[1].exited_at  # seen by its log reader, just after the kill
  assert workers[0].wait(PEER_KILLED_BOUND_S + 30) == errors.EXIT_PEER_LOST, workers[0].log[-3000:]
  assert workers[0].exited_at - killed_at < PEER_KILLED_BOUND_S
  assert lost_peer(workers[0].log) in ("worker 1", "another worker")  # never itself
  for w in workers:  # both resumed at the step the SIGTERM saved, nothing trained twice or skipped
    assert f"ckpt-{spe + step} at epoch 2/{LOOPBACK_EPOCHS}, step {step}/{spe}" in w.log, w.log[-3000:]
  assert latest_checkpoint(job_dir) == f"ckpt-{2 * spe}"  # epoch 2's: the kill came mid-epoch 3

  workers = loopback.start()
  codes = [w.wait(600) for w in workers]
  assert codes == [0, 0], "\n".join(w.log[-3000:] for w in workers)
  # Every worker restored epoch 2's checkpoint: the chief records where it resumed and
  # what it trained, and the other worker's weights ended identical to the chief's.
  assert len({weights_fingerprint(w.log) for w in workers}) == 1
  metrics = json.load(open(os.path.join(job_dir, "metrics.json")))
  assert metrics["resumed_from"]["checkpoint"].endswith(f"ckpt-{2 * spe}")
  assert (metrics["resumed_from"]["epoch"], metrics["resumed_from"]["step"]) == (2, 0)
  assert metrics["steps_trained"] == spe  # epoch 3's lost steps again, nothing before
  assert metrics["global_step"] == LOOPBACK_EPOCHS * spe and metrics["workers"] == 2


# ------------------------------------------------------------ the manifest


@pytest.fixture
def manifest(tfds_dir, tmp_path):
  """k8s/job.yaml with only the user-edited settings pointed at local paths."""
  settings = {"JOB_DIR": str(tmp_path / "job"), "DATA_DIR": tfds_dir,
              "PUBLISH_DIR": str(tmp_path / "models")}
  job = IndexedJob(os.path.join(REPO, "k8s", "job.yaml"), settings)
  network = PodNetwork([job.hostnames(i) for i in range(job.completions)])
  started = []

  def start(extra_args=None):
    pods = job.start(network, str(tmp_path), extra_args)
    started.extend(pods)
    return pods

  yield types.SimpleNamespace(job=job, start=start, settings=settings, network=network)
  stop_all(started)
  network.close()


@needs_netns
def test_sigterm_saves_at_a_common_step_and_exits_143_then_a_lost_node_fails_its_peer(
    manifest, tmp_path, monkeypatch):
  """SIGTERM to one pod: both save at one step, exit 143, and the rerun resumes there. Then
  the rerun's worker 1 loses its node: worker 0 fails with 129 within the bound.

  One cluster start for both (the lost node had a cluster of its own, trained from
  scratch into epoch 2): the cable is pulled from the rerun's pods, mid-epoch 3.
  """
  start, settings = manifest.start, manifest.settings
  # One pod preempted, right after its first log line inside epoch 2 (tests/faults.py); the
  # other was not told.
  fault = str(tmp_path / "fault")
  monkeypatch.setenv("PYTHONPATH", signal_on_log(
      fault, f"epoch 2/{EPOCHS} step ", signal.SIGTERM, who=1)["PYTHONPATH"])
  pods = start(MID_EPOCH_LOGGING)
  codes = [p.wait(300) for p in pods]
  assert codes == [errors.EXIT_PREEMPTED] * 2, "\n".join(p.log[-3000:] for p in pods)
  assert fired(fault)
  stops = {re.search(rf"stopped on SIGTERM at epoch 2, step (\d+)/{SPE}", p.log).group(1) for p in pods}
  assert len(stops) == 1, "the workers stopped at different steps"
  step = int(stops.pop())
  assert 0 < step < SPE
  checkpoint = tf.train.latest_checkpoint(os.path.join(settings["JOB_DIR"], "checkpoints"))
  assert checkpoint.endswith(f"ckpt-{SPE + step}")

  pods = start(MID_EPOCH_LOGGING)
  for p in pods:
    p.wait_for(f"at epoch 2/{EPOCHS}, step {step}/{SPE}", timeout=120)
  pods[0].wait_for(f"Epoch 2/{EPOCHS} done", timeout=120)  # and it trains on from there

  # A lost node: packets vanish, with no reset and no FIN.
  pods[1].wait_for(f"epoch 3/{EPOCHS} step ", timeout=120)
  cut_at = time.time()
  manifest.network.disconnect(1)
  assert pods[0].wait(NODE_LOST_BOUND_S + 30) == errors.EXIT_PEER_LOST, pods[0].log[-3000:]
  assert pods[0].exited_at - cut_at < NODE_LOST_BOUND_S
  assert lost_peer(pods[0].log) in ("worker 1", "another worker")
