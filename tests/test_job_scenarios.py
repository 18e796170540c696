"""k8s/job.yaml under the Job controller's rules: every fault ends Complete with one export, or Failed.

Each scenario submits the manifest to `standins.job_controller.JobController`,
which creates, deletes and replaces pods as the batch/v1 Job controller
does, from the manifest's own podFailurePolicy, backoffLimitPerIndex,
maxFailedIndexes, podReplacementPolicy and grace period. The pods are the
real trainer (tests/k8s_harness.py: the manifest's command, environment and
DNS names, each pod in its own network namespace). Only the back-off delays
are scaled (10 s -> 0.1 s), and the Jobs train 4 epochs, not the manifest's 7
(every fault lies in epochs 2 to 4). The outcome each scenario asserts is
what docs/fault-tolerance.md promises.

These need root and iproute2 (network namespaces); under CI=true a skip
fails the run (tests/no_skips_in_ci.py).
"""

import json
import os
import shutil
import signal
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import ACCURACY_BAR, NUM_TEST, NUM_TRAIN, REPO
from faults import fired, pause_on_log, release, signal_on_log, signal_on_rename
from k8s_harness import IndexedJob, PodNetwork, netns_available
from standins.gcs_emulator import FaultProxy, Rule
from standins.job_controller import JobController
from workers import lost_peer, weights_fingerprint
from trainer import presets
from trainer import errors
from trainer import models as model_lib
from trainer.data import pipeline as data
from trainer.storage import gcs

pytestmark = pytest.mark.skipif(
    not netns_available(), reason="needs root and iproute2 to create network namespaces")

SPE = NUM_TRAIN // presets.preset("cifar10").batch_size  # steps per epoch
MANIFEST_EPOCHS = presets.preset("cifar10").epochs  # the manifest trains the preset's 6
# The scenarios' Jobs train 4 (--epochs after the manifest's args). The
# preset for 4 epochs on these data (2.83e-3 after a 0.3-epoch warm-up,
# --mixed-precision auto), 30 runs (--seed 42, 0-8, each on the full AMD EPYC
# Zen 5, where auto picks bfloat16, and with ONEDNN_MAX_CPU_ISA=AVX512_CORE and
# AVX2, float32): test accuracy 0.978 at worst, above ACCURACY_BAR.
EPOCHS = 4
# Log every 5 steps, so that a scenario can act mid-epoch.
MID_EPOCH_LOGGING = ["--log-every-steps", "5", "--steps-per-execution", "5"]
SCENARIO_FLAGS = ["--epochs", str(EPOCHS), *MID_EPOCH_LOGGING]
TIME_SCALE = 0.01  # back-off 10 s -> 0.1 s; nothing else is scaled
JOB_TIMEOUT_S = 600


@pytest.fixture
def cluster(tfds_dir, tmp_path):
  """Submits k8s/job.yaml (with local bucket paths) to a simulated Job controller."""
  settings = {"JOB_DIR": str(tmp_path / "job"), "DATA_DIR": tfds_dir,
              "PUBLISH_DIR": str(tmp_path / "models")}
  manifest = os.path.join(REPO, "k8s", "job.yaml")
  names = IndexedJob(manifest)
  network = PodNetwork([names.hostnames(i) for i in range(names.completions)])
  controllers = []

  def submit(extra_args=(), as_written=False, **overrides):
    """`kubectl apply -f k8s/job.yaml`: a new Job object (a new UID); returns its controller.

    The pods get SCENARIO_FLAGS after the manifest's args (none if `as_written`),
    then `extra_args`; `overrides` replace ConfigMap values.
    """
    job = IndexedJob(manifest, {**settings, **overrides})
    flags = ([] if as_written else SCENARIO_FLAGS) + list(extra_args)
    controller = JobController(job.job, job.launcher(network, str(tmp_path), flags),
                               time_scale=TIME_SCALE, uid=job.uid)
    controllers.append(controller)
    controller.start()
    return controller

  yield types.SimpleNamespace(submit=submit, settings=settings, network=network)
  for controller in controllers:
    controller.stop()
  network.close()


def _pod(controller, index, timeout=120):
  """The current pod of `index`, once it exists."""
  controller.wait_for(lambda: controller.pod(index) is not None, timeout)
  return controller.pod(index)


def _outcomes(controller, index):
  return [(p.exit_code, p.action) for p in controller.pods(index)]


def _log(controller, index, attempt=-1):
  return controller.pods(index)[attempt].process.log


def _assert_one_complete_export(settings, publish_dir=None, epochs=EPOCHS):
  """metrics.json of the whole run, and version 1, complete, in the job dir and the publish dir."""
  with open(os.path.join(settings["JOB_DIR"], "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  assert metrics["global_step"] == epochs * SPE and metrics["test_accuracy"] >= ACCURACY_BAR
  assert metrics["export"]["version"] == 1
  for base in [os.path.join(settings["JOB_DIR"], "export", "cifar10")] + (
      [] if publish_dir == "gcs" else [os.path.join(settings["PUBLISH_DIR"], "cifar10")]):
    assert os.listdir(base) == ["1"], base
    assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))
    assert os.listdir(os.path.join(base, "1", "variables"))
  return metrics


# ------------------------------------------------------- the manifest as written


def _evaluate_alone(job_dir, data_dir):
  """Test loss and accuracy of the final checkpoint, evaluated by one process in the
  precision the run computed in (config.json: --mixed-precision auto's choice)."""
  config = presets.preset("cifar10", data_dir=data_dir)
  source = data.load(config)
  with open(os.path.join(job_dir, "config.json")) as f:
    computed = json.load(f)["resolved"]["compute_precision"]
  model = model_lib.create_model("tutorial", source.info.image_shape, source.info.num_classes,
                                 "off" if computed == "float32" else computed)
  tf.train.Checkpoint(model=model).restore(
      tf.train.latest_checkpoint(os.path.join(job_dir, "checkpoints"))).expect_partial()
  losses, correct = [], 0
  for images, labels in data.eval_dataset(source, config):
    logits = model(images, training=False)
    losses.append(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy())
    correct += int(np.sum(np.argmax(logits, -1) == labels.numpy()))
  losses = np.concatenate(losses)
  return float(losses.mean()), correct / len(losses)


def test_manifest_trains_as_written(finished_manifest_job, tfds_dir):
  """The manifest as written (tests/manifest_run.py: its pods, no extra flags) ends Complete, one pod per index.

  The run is the one the two scenarios below start from.
  """
  job, settings, controller = (finished_manifest_job.job, finished_manifest_job.settings,
                               finished_manifest_job.controller)
  assert int(job.env(0)["TRAINER_NUM_WORKERS"]) == job.completions == job.job["spec"]["parallelism"]
  for i in range(job.completions):  # one pod per index, and it exited 0
    assert [(p.exit_code, p.action) for p in controller.pods(i)] == [(0, "Succeeded")], controller.describe()
  pods = [controller.pods(i)[0].process for i in range(job.completions)]
  assert "cluster from Kubernetes Indexed Job" in pods[1].log
  assert "cnn-trainer-1.cnn-trainer-workers:2222" in pods[1].log
  assert len({weights_fingerprint(p.log) for p in pods}) == 1
  metrics = json.load(open(os.path.join(settings["JOB_DIR"], "metrics.json")))
  assert metrics["test_accuracy"] >= ACCURACY_BAR
  assert os.path.isfile(os.path.join(settings["PUBLISH_DIR"], "cifar10", "1", "saved_model.pb"))
  # Sharded evaluation over the workers gives what one process gives: the same sums, to
  # float32's rounding. Where --mixed-precision auto chose bfloat16, activations keep 8
  # significant bits and oneDNN rounds them differently for the workers' half-size batches:
  # the loss then agrees to about 2^-8 (4.3e-3 relative, measured), and a prediction that
  # close to a class boundary may flip (none did here).
  loss, accuracy = _evaluate_alone(settings["JOB_DIR"], tfds_dir)
  bfloat16 = json.load(open(os.path.join(settings["JOB_DIR"], "config.json")))["resolved"][
      "compute_precision"] == "bfloat16"
  assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=2 / NUM_TEST if bfloat16 else 1e-9)
  assert metrics["test_loss"] == pytest.approx(loss, rel=2e-2 if bfloat16 else 1e-4)


# ------------------------------------------------------- pods that die


def test_a_worker_then_the_chief_killed_mid_epoch_then_the_chief_killed_during_the_export(
    cluster, tmp_path, monkeypatch):
  """OOM kill (SIGKILL, 137, counted) of one pod; its peer loses it (129, ignored); both
  resume. Then the chief dies in its export: worker 1, waiting at the barrier instead of
  Succeeding, loses it, and the chief, whose checkpoint holds every epoch, exports alone
  while worker 1 has nothing to do.

  One Job, three faults (each was a Job of its own; the two mid-epoch kills were already
  one): worker 1 dies in the training call after its first log line of epoch 2, and after
  both resumed, the chief in the call after its first of epoch 3 (tests/faults.py,
  in_call): always before that epoch's checkpoint, however loaded the machine, and inside
  a call, as an OOM kill lands. After both resumed again and trained to the end, the chief
  SIGKILLs itself as it renames its staged export into JOB_DIR/export/, i.e. with
  version 1 copied but not yet published (faults.signal_on_rename: the export takes
  ~0.3 s, less than a loaded machine may take to act on a log line).
  """
  fault = str(tmp_path / "fault")
  signal_on_log(fault, f"epoch 2/{EPOCHS} step ", signal.SIGKILL, who=1, in_call=True)
  signal_on_log(fault, f"epoch 3/{EPOCHS} step ", signal.SIGKILL, who=0, in_call=True)
  monkeypatch.setenv("PYTHONPATH", signal_on_rename(
      fault, os.path.join(cluster.settings["JOB_DIR"], "export"), signal.SIGKILL, who=0)["PYTHONPATH"])
  job = cluster.submit()
  assert job.wait(JOB_TIMEOUT_S) == "Complete", job.describe()
  assert fired(fault)
  lost = (errors.EXIT_PEER_LOST, "Ignore")
  assert _outcomes(job, 1) == [(137, "Count"), lost, lost, (0, "Succeeded")]
  assert _outcomes(job, 0) == [lost, (137, "Count"), (137, "Count"), (0, "Succeeded")]
  assert job.counted == [2, 1]
  assert lost_peer(_log(job, 0, 0)) in ("worker 1", "another worker")  # never itself
  assert lost_peer(_log(job, 1, 1)) in ("worker 0", "another worker")
  for i in (0, 1):  # the attempts killed mid-epoch record nothing but their logs
    assert f"at epoch 2/{EPOCHS}, step 0/{SPE}" in _log(job, i, 1)  # from epoch 1's checkpoint
  # The third attempts resumed from epoch 2's checkpoint and trained to the end: the
  # chief's died in its export, after the final fingerprint; worker 1 ran the same steps,
  # or the collectives of the two would not have matched.
  for i in (0, 1):
    assert f"ckpt-{2 * SPE} at epoch 3/{EPOCHS}, step 0/{SPE}" in _log(job, i, 2)
    assert "Final weights fingerprint" in _log(job, i, 2)
  assert weights_fingerprint(_log(job, 0, 2)) == weights_fingerprint(_log(job, 1, 2))
  assert "Waiting until every worker has finished" in _log(job, 1, 2)
  assert "Nothing to do on this worker" in _log(job, 1)
  metrics = _assert_one_complete_export(cluster.settings)
  assert metrics["finished_alone"] and metrics["steps_trained"] == 0


def test_a_chief_alone_finishes_a_trained_job_whose_worker_already_succeeded(
    cluster, finished_manifest_job, tmp_path):
  """The deadlock of 0.1: index 1 Succeeded and is never run again, and the chief must export.

  The state is made from a job trained to the end (both indexes Succeeded: the
  run shared by tests/manifest_run.py) by removing the export and
  metrics.json, as a chief killed mid-export in 0.1 left it. Only index 0 runs.
  """
  settings = finished_manifest_job.settings
  os.remove(os.path.join(settings["JOB_DIR"], "metrics.json"))
  shutil.rmtree(os.path.join(settings["JOB_DIR"], "export"))
  shutil.rmtree(settings["PUBLISH_DIR"])
  names = IndexedJob(os.path.join(REPO, "k8s", "job.yaml"), settings)
  chief = names.start_pod(cluster.network, str(tmp_path), 0)
  assert chief.wait(300) == 0, chief.log[-3000:]
  # It never created the cluster's strategy, so never waited for worker 1; nothing retrained.
  metrics = _assert_one_complete_export(settings, epochs=MANIFEST_EPOCHS)
  assert metrics["finished_alone"] and metrics["steps_trained"] == 0


# ------------------------------------------------------------- SIGTERM


def test_a_node_drain_during_training_and_another_during_the_final_evaluation(cluster):
  """Eviction during training (DisruptionTarget, SIGTERM): both save at one step, exit 143
  (ignored) and resume there. After the last step nothing stops: a second drain, during the
  resumed pods' final evaluation, lets the evaluation and the export finish, and both exit 0.

  One Job for both drains (the second one was a Job of its own, drained in its final
  evaluation): the second drain needs only a Job past its last step, which the first leaves.
  """
  job = cluster.submit()
  _pod(job, 1).wait_for(f"epoch 2/{EPOCHS} step ")
  job.drain()
  job.wait_for(lambda: len(job.pods(0)) == 2 and job.pods(0)[1].process is not None, 300)
  job.pods(0)[1].process.wait_for(f"epoch {EPOCHS}/{EPOCHS} step {SPE}/{SPE}", timeout=300)
  job.drain()
  assert job.wait(JOB_TIMEOUT_S) == "Complete", job.describe()
  for i in (0, 1):
    assert _outcomes(job, i) == [(errors.EXIT_PREEMPTED, "Ignore"), (0, "Succeeded")]
    assert [[c["type"] for c in pod.conditions] for pod in job.pods(i)] == [["DisruptionTarget"]] * 2
  assert job.counted == [0, 0]
  assert "finishing the final evaluation and the export first" in _log(job, 0)
  metrics = _assert_one_complete_export(cluster.settings)
  assert metrics["resumed_from"]["epoch"] == 1  # mid-epoch 2, at the step both saved
  assert metrics["steps_trained"] == EPOCHS * SPE - metrics["resumed_from"]["global_step"]


# ------------------------------------------------------------- storage


@pytest.fixture
def gcs_publish(cluster, emulator, bucket, monkeypatch):
  """PUBLISH_DIR on the GCS emulator, behind a fault proxy that the pods reach on the bridge."""
  proxy = FaultProxy(emulator, host=cluster.network.host_address)
  with proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # the pods' environment
    yield types.SimpleNamespace(proxy=proxy, publish_dir=f"gs://{bucket}/models", bucket=bucket)


def _published(bucket):
  names = [b.name for b in gcs.client().list_blobs(bucket, prefix="models/")]
  return sorted({n.split("/")[2] for n in names}), names


def test_a_transient_preflight_failure_is_retried_and_a_second_training_fails_naming_the_holder(
    cluster, gcs_publish, tmp_path, monkeypatch):
  """One Job, two storage events (each was a Job of its own).

  GCS answers 503 to the chief's preflight: exit 142, counted, retried after the
  back-off. Then a second Job on the same JOB_DIR: its chief waits for the lock
  and exits 2 (FailJob), naming the holder, while the first Job's chief is
  stopped right after its first log line in epoch 2 (tests/faults.py), so that it
  holds the lock however slowly the second starts. The first Job then completes,
  with nothing counted but the 503.
  """
  fault = str(tmp_path / "fault")
  monkeypatch.setenv("PYTHONPATH", pause_on_log(fault, f"epoch 2/{EPOCHS} step ", who=0)["PYTHONPATH"])
  outage = Rule("status", status=503)
  gcs_publish.proxy.rules.append(outage)
  first = cluster.submit(PUBLISH_DIR=gcs_publish.publish_dir)
  first.wait_for(lambda: bool(first.pods(0)) and first.pods(0)[0].exit_code is not None, 120)
  gcs_publish.proxy.rules.remove(outage)  # GCS recovers
  first.wait_for(lambda: fired(fault), 300)  # it acts once: the second Job's chief runs on
  other = PodNetwork([IndexedJob(os.path.join(REPO, "k8s", "job.yaml")).hostnames(i) for i in (0, 1)])
  try:
    # The same JOB_DIR; its PUBLISH_DIR stays local: the fault proxy to GCS listens on
    # the first Job's bridge, which this second network cannot reach.
    job = IndexedJob(os.path.join(REPO, "k8s", "job.yaml"), cluster.settings)
    second = JobController(job.job, job.launcher(other, str(tmp_path / "second"),
                                                 ["--job-lock-wait-s", "2"]),
                           time_scale=TIME_SCALE, uid=job.uid)
    second.start()
    try:
      assert second.wait(120) == "Failed", second.describe()
    finally:
      second.stop()
    assert _outcomes(second, 0) == [(errors.EXIT_USAGE, "FailJob")]
    message = _log(second, 0).strip().splitlines()[-1]
    assert message.startswith("error: the job dir is in use by another training:")
    assert first.uid in message and "--cascade=foreground" in message
  finally:
    other.close()
    release(fault)
  assert first.wait(JOB_TIMEOUT_S) == "Complete", first.describe()
  assert _outcomes(first, 0) == [(errors.EXIT_TRANSIENT, "Count"), (0, "Succeeded")]
  assert _outcomes(first, 1) == [(0, "Succeeded")]
  assert first.counted == [1, 0]  # the 503 only: the lock's contention cost the first Job nothing
  # The error a user reads: one log line that names the cause and says the Job retries.
  shown = [line for line in _log(first, 0, 0).splitlines() if " ERROR " in line]
  assert any("GCS could not be reached" in line and "the Job retries" in line
             for line in shown), shown
  _assert_one_complete_export(cluster.settings, publish_dir="gcs")
  versions, names = _published(gcs_publish.bucket)
  assert versions == ["1"] and "models/cifar10/1/saved_model.pb" in names


def test_a_permission_error_fails_the_job_at_once(cluster, gcs_publish):
  """GCS answers 403: exit 2, FailJob; worker 1 is deleted and nothing is exported."""
  gcs_publish.proxy.rules.append(Rule("status", status=403))
  job = cluster.submit(PUBLISH_DIR=gcs_publish.publish_dir)
  assert job.wait(JOB_TIMEOUT_S) == "Failed", job.describe()
  assert _outcomes(job, 0) == [(errors.EXIT_USAGE, "FailJob")]
  assert [p.action for p in job.pods(1)] == ["Terminated"]
  assert [(c["type"], c["reason"]) for c in job.status["conditions"]] == [
      ("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")]
  assert f"--publish-dir {gcs_publish.publish_dir}: permission denied" in _log(job, 0)
  assert not os.path.exists(os.path.join(cluster.settings["JOB_DIR"], "checkpoints"))


# --------------------------------------------------------------- reruns


def test_a_rerun_of_a_finished_job_trains_and_publishes_nothing(cluster, finished_manifest_job):
  """The first Job is the run shared by tests/manifest_run.py (Complete); the rerun is the same manifest."""
  settings = finished_manifest_job.settings
  before = _assert_one_complete_export(settings, epochs=MANIFEST_EPOCHS)
  # kubectl delete job --cascade=foreground && kubectl apply
  rerun = cluster.submit(as_written=True, **settings)
  assert rerun.wait(120) == "Complete", rerun.describe()
  assert "Nothing to do on this worker" in _log(rerun, 1)
  # metrics.json as the first run left it: nothing trained, evaluated or exported again.
  assert _assert_one_complete_export(settings, epochs=MANIFEST_EPOCHS) == before
