"""Cluster detection: TF_CONFIG (TFJob, Vertex AI), JobSets, Kubernetes Indexed Jobs, malformed input."""

import json

import pytest
import tensorflow as tf

from trainer.cluster import distribution
from trainer.cluster import resolver
from trainer import errors
from trainer import task

INDEXED = {"JOB_COMPLETION_INDEX": "1", "TRAINER_NUM_WORKERS": "3", "TRAINER_JOB_NAME": "cnn-trainer",
           "TRAINER_SERVICE": "cnn-trainer-workers", "TRAINER_PORT": "2222"}


def test_single_machine_without_cluster_variables():
  cluster = resolver.cluster_from_env({})
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (1, 0, True)
  assert not cluster.is_multi_worker


def test_indexed_job_derives_tf_config_from_stable_pod_names():
  cluster = resolver.cluster_from_env(INDEXED)
  assert cluster.tf_config == {
      "cluster": {"worker": [f"cnn-trainer-{i}.cnn-trainer-workers:2222" for i in range(3)]},
      "task": {"type": "worker", "index": 1}}
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (3, 1, False)
  assert "Indexed Job" in cluster.source
  assert resolver.cluster_from_env({**INDEXED, "JOB_COMPLETION_INDEX": "0"}).is_chief


@pytest.mark.parametrize("env, message", [
    ({"JOB_COMPLETION_INDEX": "1"}, r"JOB_COMPLETION_INDEX='1' is set but TRAINER_NUM_WORKERS is not"),
    ({"TRAINER_NUM_WORKERS": "2"}, r"TRAINER_NUM_WORKERS='2' is set but JOB_COMPLETION_INDEX is not"),
])
def test_half_an_indexed_jobs_variables_is_refused(env, message):
  """Each pod fell back to a single machine: every one its own chief on one job directory."""
  with pytest.raises(errors.ClusterError, match=message):
    resolver.cluster_from_env(env)


@pytest.mark.parametrize("env", [{"JOB_COMPLETION_INDEX": "0"}, {"TRAINER_NUM_WORKERS": "1"}])
def test_a_one_pod_indexed_job_is_one_machine(env):
  cluster = resolver.cluster_from_env(env)
  assert (cluster.num_workers, cluster.is_chief, cluster.is_multi_worker) == (1, True, False)


def test_indexed_job_default_port():
  env = {k: v for k, v in INDEXED.items() if k != "TRAINER_PORT"}
  assert resolver.cluster_from_env(env).tf_config["cluster"]["worker"][0].endswith(":2222")


@pytest.mark.parametrize("change, message", [
    ({"JOB_COMPLETION_INDEX": "3"}, r"JOB_COMPLETION_INDEX=3 but TRAINER_NUM_WORKERS=3"),
    ({"TRAINER_NUM_WORKERS": "two"}, r"TRAINER_NUM_WORKERS='two' is not an integer"),
    ({"TRAINER_NUM_WORKERS": "0"}, r"TRAINER_NUM_WORKERS=0 must be >= 1"),
    ({"TRAINER_SERVICE": ""}, r"TRAINER_SERVICE not set"),
    ({"TRAINER_PORT": "-5"}, r"TRAINER_PORT=-5 must be >= 1"),
    ({"TRAINER_PORT": "70000"}, r"TRAINER_PORT=70000 must be <= 65535"),
])
def test_malformed_indexed_job(change, message):
  with pytest.raises(errors.ClusterError, match=message):
    resolver.cluster_from_env({**INDEXED, **change})


# What overlays/jobset's downward API gives worker 1 of the JobSet cnn-trainer's
# replicatedJob `workers` (pod labels set by kubernetes-sigs/jobset v0.12.0,
# jobset_controller.go labelAndAnnotateObject; JOB_COMPLETION_INDEX by the Job controller).
JOBSET = {"TRAINER_JOBSET_NAME": "cnn-trainer", "TRAINER_REPLICATED_JOB": "workers",
          "TRAINER_JOB_INDEX": "0", "JOB_COMPLETION_INDEX": "1", "TRAINER_NUM_WORKERS": "3",
          "TRAINER_PORT": "2222"}


def test_jobset_derives_tf_config_from_the_host_names_jobset_gives_its_pods():
  """<jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>; the subdomain defaults to the JobSet's name."""
  cluster = resolver.cluster_from_env(JOBSET)
  assert cluster.tf_config == {
      "cluster": {"worker": [f"cnn-trainer-workers-0-{i}.cnn-trainer:2222" for i in range(3)]},
      "task": {"type": "worker", "index": 1}}
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (3, 1, False)
  assert cluster.source.startswith("JobSet")
  assert resolver.cluster_from_env({**JOBSET, "JOB_COMPLETION_INDEX": "0"}).is_chief


def test_jobset_with_its_own_subdomain_and_default_port():
  env = {**{k: v for k, v in JOBSET.items() if k != "TRAINER_PORT"}, "TRAINER_SERVICE": "trainers"}
  assert resolver.cluster_from_env(env).tf_config["cluster"]["worker"][2] == \
      "cnn-trainer-workers-0-2.trainers:2222"


def test_jobset_wins_over_the_indexed_job_variables_and_tf_config_over_both():
  """A JobSet's pod also carries the Indexed Job's variables (the child Job's name, JOB_COMPLETION_INDEX)."""
  both = {**INDEXED, **JOBSET, "TRAINER_JOB_NAME": "cnn-trainer-workers-0"}
  assert resolver.cluster_from_env(both).source.startswith("JobSet")
  tf_config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
  assert resolver.cluster_from_env({**both, "TF_CONFIG": json.dumps(tf_config)}).source == "TF_CONFIG"


def test_jobset_of_one_worker_is_one_machine():
  cluster = resolver.cluster_from_env({**JOBSET, "JOB_COMPLETION_INDEX": "0", "TRAINER_NUM_WORKERS": "1"})
  assert not cluster.is_multi_worker and cluster.is_chief


@pytest.mark.parametrize("change, message", [
    # A downward-API reference to a label the pod lacks gives an empty value.
    ({"TRAINER_REPLICATED_JOB": ""},
     r"TRAINER_REPLICATED_JOB is empty: the pod has no label jobset.sigs.k8s.io/replicatedjob-name"),
    ({"TRAINER_JOB_INDEX": ""}, r"TRAINER_JOB_INDEX is empty: the pod has no label jobset.sigs.k8s.io/job-index"),
    ({"TRAINER_JOBSET_NAME": ""}, r"TRAINER_JOBSET_NAME is empty"),
    ({"TRAINER_JOB_INDEX": "1"}, r"TRAINER_JOB_INDEX=1: .* replicas: 1 and parallelism = completions"),
    ({"TRAINER_JOB_INDEX": "x"}, r"TRAINER_JOB_INDEX='x' is not an integer"),
    ({"TRAINER_REPLICATED_JOB": "Workers_1"}, r"TRAINER_REPLICATED_JOB='Workers_1' is not a DNS label"),
    ({"TRAINER_SERVICE": "a.b"}, r"TRAINER_SERVICE='a.b' is not a DNS label"),
    ({"JOB_COMPLETION_INDEX": "3"}, r"JOB_COMPLETION_INDEX=3 but TRAINER_NUM_WORKERS=3"),
    ({"TRAINER_NUM_WORKERS": "0"}, r"TRAINER_NUM_WORKERS=0 must be >= 1"),
    ({"JOB_COMPLETION_INDEX": ""}, r"JOB_COMPLETION_INDEX='' is not an integer"),
])
def test_malformed_jobset(change, message):
  with pytest.raises(errors.ClusterError, match=message):
    resolver.cluster_from_env({**JOBSET, **change})


def test_malformed_jobset_is_exit_code_2_from_the_cli(monkeypatch, capsys, tmp_path):
  """Exit 2: the child Job's podFailurePolicy fails it, and the JobSet's rule fails the JobSet."""
  monkeypatch.delenv("TF_CONFIG", raising=False)
  for name, value in {**JOBSET, "TRAINER_JOB_INDEX": "1"}.items():
    monkeypatch.setenv(name, value)
  assert task.main(["--job-dir", str(tmp_path), "--dataset", "mnist"]) == errors.EXIT_USAGE == 2
  assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: TRAINER_JOB_INDEX=1: ")


def test_tfjob_workers_only_worker0_is_chief():
  tf_config = {"cluster": {"worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 1}}
  cluster = resolver.cluster_from_env({"TF_CONFIG": json.dumps(tf_config)})
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (2, 1, False)


def test_tfjob_with_chief_counts_the_chief_as_a_worker():
  tf_config = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]},
               "task": {"type": "worker", "index": 0}}
  cluster = resolver.cluster_from_env({"TF_CONFIG": json.dumps(tf_config)})
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (3, 1, False)


def test_vertex_ai_style_tf_config():
  # Vertex AI adds 'environment', 'job' and a 'trial' field; they are ignored.
  tf_config = {"cluster": {"chief": ["cmle-training-workerpool0-ab-0:2222"],
                           "worker": ["cmle-training-workerpool1-ab-0:2222"]},
               "environment": "cloud", "task": {"type": "chief", "index": 0, "trial": ""},
               "job": {"worker_pool_specs": []}}
  cluster = resolver.cluster_from_env({"TF_CONFIG": json.dumps(tf_config), **INDEXED})
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == (2, 0, True)
  assert cluster.source == "TF_CONFIG"  # TF_CONFIG wins over the Indexed-Job variables
  assert cluster.tf_config["task"] == {"type": "chief", "index": 0}


@pytest.mark.parametrize("raw, message", [
    ("{cluster", r"not JSON"),
    ("[]", r"expected a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', r"'cluster' must map task types"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}',
     r"task types \['ps'\] are not supported"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     r"task.type 'chief' is not one of the cluster's task types \['worker'\]"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     r"task.index 1 is out of range for 1 worker task"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', r"'a', which is not host:port"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', r"at most one chief"),
    # A traceback (unhashable type), a wrong message, a silent index 1, a port TensorFlow refuses later.
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": ["worker"], "index": 0}}',
     r"task.type \['worker'\] must be a string"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": "1"}}',
     r"task.index '1' must be an integer"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": true}}',
     r"task.index True must be an integer"),
    ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker", "index": 0}}',
     r"'a:99999', whose port is not in 1-65535"),
])
def test_malformed_tf_config(raw, message):
  with pytest.raises(errors.ClusterError, match=message):
    resolver.cluster_from_env({"TF_CONFIG": raw})


def test_malformed_cluster_is_exit_code_2_from_the_cli(monkeypatch, capsys, tmp_path):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  for name, value in {**INDEXED, "JOB_COMPLETION_INDEX": "7"}.items():
    monkeypatch.setenv(name, value)
  assert task.main(["--job-dir", str(tmp_path), "--dataset", "mnist"]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "error: JOB_COMPLETION_INDEX=7 but TRAINER_NUM_WORKERS=3: the Job's completions and "
      "TRAINER_NUM_WORKERS must be equal.")


def test_batch_must_divide_over_replicas():
  import tensorflow as tf
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with pytest.raises(errors.ConfigError, match=r"--batch-size 127 does not divide over 2 replicas"):
    distribution.check_batch(strategy, 127)


# ------------------------------------------- naming the lost peer from TensorFlow's text
# Texts TensorFlow 2.21 raised on worker 0 of two (an Indexed Job's TF_CONFIG: both are
# "worker") when worker 1 was SIGKILLed mid-step, recorded from the loopback kill (tests/test_multiworker.py).
_RESET = ("Collective ops is aborted by: recvmsg:Connection reset by peer\n"
          "Additional GRPC error information from remote target /job:worker/replica:0/task:1 "
          "while calling /tensorflow.WorkerService/RecvBuf:")
# The same kill, seen through the coordination service: TensorFlow names this worker's own
# device first, then the lost one.
_HEARTBEAT = ("{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/"
              "replica:0/task:0/device:CPU:0}} Collective ops is aborted by: Error reported from "
              "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
              "/job:worker/replica:0/task:1\n[[{{node CollectiveReduceV2}}]]")
# An abort that names only this worker's own device, as one CI run's chief saw (its full text
# was not kept: this is its shape).
_SELF_ONLY = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/"
              "device:CPU:0}} [_Derived_]Collective ops is aborted by: cancelled")


def _lost(text, error_class=tf.errors.UnavailableError, index=0):
  cluster = resolver.cluster_from_env({**INDEXED, "JOB_COMPLETION_INDEX": str(index)})
  return str(distribution.peer_lost(error_class(None, None, text), cluster))


@pytest.mark.parametrize("text", [_RESET, _HEARTBEAT])
def test_the_lost_peer_is_the_task_named_other_than_this_one(text):
  assert _lost(text).startswith("lost contact with worker 1 (")


def test_an_abort_naming_only_this_worker_names_no_one_rather_than_itself():
  message = _lost(_SELF_ONLY, tf.errors.AbortedError)
  assert message.startswith("lost contact with another worker (")
  assert "Collective ops is aborted by: cancelled" in message  # the cause, not the class name


def test_a_lost_peer_message_says_what_to_do():
  assert _lost(_RESET).endswith("Restart all workers; training resumes from the last checkpoint.")
  assert "(Collective ops is aborted by: recvmsg:Connection reset by peer)" in _lost(_RESET)


def test_the_chief_waits_for_every_other_task_s_host_and_only_for_them():
  """wait_for_peers: the hosts of every task but the chief's own; localhost resolves at once."""
  config = {"cluster": {"chief": ["chief-0.svc:2222"], "worker": ["w-0.svc:2222", "[::1]:2223"]},
            "task": {"type": "chief", "index": 0}}
  cluster = resolver.Cluster(num_workers=3, worker_index=0, is_chief=True, tf_config=config,
                                 source="test")
  assert distribution._peer_hosts(cluster) == [("worker 0", "w-0.svc"), ("worker 1", "::1")]
  local = {"cluster": {"worker": ["localhost:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 0}}
  distribution.wait_for_peers(resolver.Cluster(num_workers=2, worker_index=0, is_chief=True,
                                                   tf_config=local, source="test"))


def test_the_chief_keeps_its_job_dir_lock_while_it_waits_for_a_pending_worker(tmp_path, monkeypatch):
  """A worker Pending for a GPU can keep the chief waiting past its lock's lease (15 min); nothing
  refreshed it there, so a second training could take the job directory over and both would
  write to it. The wait refreshes it (here a lease of 0.6 s over a wait of 1.5 s)."""
  import socket  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from trainer.storage import joblock  # pylint: disable=import-outside-toplevel
  job_dir = str(tmp_path / "job")
  lock = joblock.JobDirLock(job_dir, 0.6, env={"TRAINER_JOB_UID": "uid-a"}).acquire()
  config = {"cluster": {"worker": ["localhost:2222", "pending.invalid:2222"]},
            "task": {"type": "worker", "index": 0}}
  cluster = resolver.Cluster(num_workers=2, worker_index=0, is_chief=True, tf_config=config,
                                 source="test")
  resolve, pending_until = socket.getaddrinfo, time.monotonic() + 1.5

  def getaddrinfo(host, *args, **kwargs):
    if host == "pending.invalid" and time.monotonic() < pending_until:
      raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return resolve("localhost", *args, **kwargs)

  monkeypatch.setattr(distribution.socket, "getaddrinfo", getaddrinfo)
  distribution.wait_for_peers(cluster, poll_s=0.05, tick=lock.maybe_refresh)
  assert time.monotonic() >= pending_until
  with pytest.raises(errors.JobDirLocked):
    joblock.JobDirLock(job_dir, env={"TRAINER_JOB_UID": "uid-b"}).acquire()
  assert joblock.read_lock(job_dir)["token"] == lock.token


def test_a_chief_waiting_for_a_pending_worker_exits_143_on_sigterm(tfds_dir, tmp_path):
  """Worker 1's pod is Pending (no GPU free), so its name resolves to nothing. The chief waits
  for it in Python, where a SIGTERM (Kueue's waitForPodsReady eviction, a deleted Job) ends it at
  once with 143 and frees its GPU; inside MultiWorkerMirroredStrategy's own join TensorFlow's
  C++ handler would swallow the signal until the grace period's SIGKILL (137)."""
  import os  # pylint: disable=import-outside-toplevel
  import signal  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from conftest import REPO  # pylint: disable=import-outside-toplevel
  from ports import free_port  # pylint: disable=import-outside-toplevel
  job = tmp_path / "job"
  tf_config = {"cluster": {"worker": [f"localhost:{free_port()}",
                                      "cnn-trainer-1.cnn-trainer-workers.invalid:2222"]},  # RFC 2606: never resolves
               "task": {"type": "worker", "index": 0}}
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainer.task", "--preset", "smoke", "--data-dir", tfds_dir,
       "--job-dir", str(job)], cwd=REPO, env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while not (job / "lock.json").exists():  # the chief holds the job dir: start-up is done
      assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
      time.sleep(0.1)
    # Long enough that a chief without the wait would be inside the strategy's join by now.
    time.sleep(3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)  # not the Job's 120 s grace period
  finally:
    proc.kill()
  assert proc.returncode == 143, err[-3000:]
  assert not (job / "lock.json").exists()  # released for the rerun
