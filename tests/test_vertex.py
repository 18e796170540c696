"""Vertex AI custom training: the environment it sets, where the trainer writes, its job specs.

No Vertex AI here: the tests set the variables Vertex AI sets, as its docs
give them (trainer/cluster/vertex.py cites the pages), run the real trainer (in
process for one replica, as real worker processes for two, with the args of
vertex/*.yaml), and check where everything lands. The job specs are checked
against Vertex AI's own CustomJobSpec proto (google-cloud-aiplatform), which
rejects a misspelt field. gs:// replacement of AIP_MODEL_DIR runs against the
GCS emulator.
"""

import copy
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.cloud.aiplatform_v1.types import custom_job
from google.protobuf import json_format

from conftest import REPO
from ports import free_port
from trainer.cluster import resolver
from trainer import errors
from trainer import export
from trainer.storage import gcs
from trainer.storage import jobdir
from trainer.storage import api as storage
from trainer import task
from trainer.cluster import vertex
from workers import Worker, stop_all

SPECS = {name: os.path.join(REPO, "vertex", name)
         for name in ("custom-job.yaml", "custom-job-multi-worker.yaml")}
# The documented example addresses (distributed-training page).
POOL0 = ["cmle-training-workerpool0-ab-0:2222"]
POOL1 = ["cmle-training-workerpool1-ab-0:2222", "cmle-training-workerpool1-ab-1:2222"]
VERTEX_VARIABLES = ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR",
                    "CLUSTER_SPEC", "TF_CONFIG", "JOB_COMPLETION_INDEX")


def aip_env(base: str) -> dict:
  """The AIP_* variables for CustomJobSpec.baseOutputDirectory.outputUriPrefix = `base`."""
  return {"AIP_MODEL_DIR": f"{base}/model/", "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
          "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/"}


def cluster_spec(pools: dict, task_type: str, index: int) -> str:
  return json.dumps({"cluster": pools, "environment": "cloud",
                     "task": {"type": task_type, "index": index, "trial": ""}})


# ---------------------------------------------------------------- the environment

def test_aip_directories_come_from_the_base_output_directory():
  outputs = vertex.outputs(aip_env("gs://b/runs/x"))
  assert outputs == vertex.Outputs(base_dir="gs://b/runs/x", model_dir="gs://b/runs/x/model",
                                   checkpoint_dir="gs://b/runs/x/checkpoints",
                                   tensorboard_dir="gs://b/runs/x/logs")
  # A hyperparameter-tuning trial's directories sit under <base>/<trial_id>/.
  assert vertex.outputs(aip_env("gs://b/runs/x/7")).base_dir == "gs://b/runs/x/7"
  assert vertex.outputs({}) is None  # not on Vertex AI
  with pytest.raises(errors.ConfigError, match="AIP_MODEL_DIR='gs://b/' has no parent"):
    vertex.outputs({"AIP_MODEL_DIR": "gs://b/"})


@pytest.mark.parametrize("task_type, index, expected", [
    ("workerpool0", 0, (3, 0, True)),
    ("workerpool1", 0, (3, 1, False)),
    ("workerpool1", 1, (3, 2, False)),
])
def test_cluster_spec_alone_gives_chief_and_workers(task_type, index, expected):
  env = {"CLUSTER_SPEC": cluster_spec({"workerpool0": POOL0, "workerpool1": POOL1}, task_type, index)}
  cluster = resolver.cluster_from_env(env)
  assert (cluster.num_workers, cluster.worker_index, cluster.is_chief) == expected
  assert cluster.source == "Vertex AI CLUSTER_SPEC"
  assert cluster.tf_config["cluster"] == {"chief": POOL0, "worker": POOL1}


def test_vertex_tf_config_wins_over_cluster_spec():
  tf_config = {"cluster": {"chief": POOL0, "worker": POOL1}, "environment": "cloud",
               "task": {"type": "worker", "index": 1, "trial": ""}, "job": {"workerPoolSpecs": []}}
  env = {"TF_CONFIG": json.dumps(tf_config),
         "CLUSTER_SPEC": cluster_spec({"workerpool0": POOL0, "workerpool1": POOL1}, "workerpool1", 1)}
  cluster = resolver.cluster_from_env(env)
  assert (cluster.source, cluster.worker_index, cluster.is_chief) == ("TF_CONFIG", 2, False)


def test_one_replica_is_a_single_machine():
  """A one-replica job has nothing to talk to: one machine's strategy, over all its GPUs."""
  env = {"CLUSTER_SPEC": cluster_spec({"workerpool0": POOL0}, "workerpool0", 0)}
  cluster = resolver.cluster_from_env(env)
  assert (cluster.num_workers, cluster.is_chief, cluster.is_multi_worker) == (1, True, False)
  assert cluster.source == "Vertex AI CLUSTER_SPEC, one task: single machine"


@pytest.mark.parametrize("env, message", [
    ({"CLUSTER_SPEC": cluster_spec({"workerpool0": POOL0, "workerpool2": POOL1}, "workerpool0", 0)},
     r"CLUSTER_SPEC has workerPoolSpecs\[2\] \(parameter servers or a Reduction Server\): this "
     r"trainer runs MultiWorkerMirroredStrategy"),
    ({"CLUSTER_SPEC": cluster_spec({"workerpool0": POOL0, "workerpool3": POOL1[:1]}, "workerpool3", 0)},
     r"workerPoolSpecs\[3\] \(an evaluator\)"),
    # Vertex AI's TF_CONFIG leaves evaluators out of the cluster; only the task says so.
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": POOL0, "worker": POOL1}, "environment": "cloud",
                               "task": {"type": "evaluator", "index": 0}})},
     r"TF_CONFIG has workerPoolSpecs\[3\] \(an evaluator\): .* use workerPoolSpecs\[0\]"),
    ({"CLUSTER_SPEC": cluster_spec({"workerpool7": POOL0}, "workerpool7", 0)},
     r"unknown worker pools \['workerpool7'\]"),
    ({"CLUSTER_SPEC": "{"}, r"malformed CLUSTER_SPEC \(Vertex AI\): not JSON"),
    # No task.type: a TypeError from sorting None among the pool names.
    ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": POOL0}, "task": {"index": 0}})},
     r"malformed CLUSTER_SPEC \(Vertex AI\): task.type None must be a pool name"),
])
def test_pools_this_trainer_cannot_run_are_refused(env, message):
  with pytest.raises(errors.ClusterError, match=message):
    resolver.cluster_from_env(env)


def test_job_dir_flag_wins_over_the_aip_directories():
  platform = vertex.outputs(aip_env("gs://b/out"))
  assert jobdir.for_run("/jobs/mine", "runs/cifar10", platform) == jobdir.Paths("/jobs/mine")
  assert jobdir.for_run(None, "runs/cifar10", None) == jobdir.Paths("runs/cifar10")
  paths = jobdir.for_run(None, "runs/cifar10", platform)
  assert (paths.job_dir, paths.checkpoints, paths.logs("eval"), paths.model_dir) == (
      "gs://b/out", "gs://b/out/checkpoints", "gs://b/out/logs/eval", "gs://b/out/model")
  # Every TensorBoard file follows AIP_TENSORBOARD_LOG_DIR, the HParams session included.
  elsewhere = jobdir.for_run(None, "runs/cifar10", vertex.Outputs(
      base_dir="gs://b/out", model_dir=None, checkpoint_dir=None, tensorboard_dir="gs://tb/run"))
  assert (elsewhere.logs_root, elsewhere.logs("train")) == ("gs://tb/run", "gs://tb/run/train")


# ---------------------------------------------------------------- training on one replica

def _files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _event_files(directory):
  return [f for f in _files(directory) if ".tfevents." in f] if os.path.isdir(directory) else []


def _assert_vertex_layout(base, worker_log=""):
  """Everything where Vertex AI looks for it, and the job's own files in the base directory."""
  model = os.path.join(base, "model")
  assert os.path.isfile(os.path.join(model, "saved_model.pb")), worker_log
  # The same SavedModel as the versioned export, at the root (model import reads it there).
  assert _files(model) == _files(os.path.join(base, "export", "cifar10", "1"))
  assert tf.train.latest_checkpoint(os.path.join(base, "checkpoints"))
  for run in ("train", "eval"):
    assert _event_files(os.path.join(base, "logs", run)), run
  assert {"config.json", "metrics.json"} <= set(os.listdir(base))
  metrics = json.load(open(os.path.join(base, "metrics.json")))
  assert metrics["export"]["model_dir"] == model
  return metrics


def test_one_replica_writes_where_vertex_ai_looks(tfds_dir, tmp_path, monkeypatch):
  for name in VERTEX_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  base = str(tmp_path / "out")
  for name, value in aip_env(base).items():
    monkeypatch.setenv(name, value)
  # A retried job finds the previous attempt's files in AIP_MODEL_DIR.
  os.makedirs(os.path.join(base, "model", "variables"))
  open(os.path.join(base, "model", "saved_model.pb"), "wb").write(b"previous attempt")
  open(os.path.join(base, "model", "variables", "stale.index"), "wb").write(b"old")
  flags = ["--data-dir", tfds_dir, "--epochs", "1", "--batch-size", "128"]

  assert task.main(flags) == 0
  _assert_vertex_layout(base)
  assert not os.path.exists(os.path.join(base, "model", "variables", "stale.index"))
  assert [n for n in os.listdir(base) if n.startswith(".")] == []  # no staging left
  loaded = tf.saved_model.load(os.path.join(base, "model"))
  images = np.zeros([2, 32, 32, 3], np.uint8)
  assert loaded.signatures[export.DEFAULT_SIGNATURE](images=images)["classes"].shape == [2]

  # A rerun of the finished job only restores what is missing: here the model dir.
  os.remove(os.path.join(base, "model", "saved_model.pb"))
  assert task.main(flags) == 0
  assert os.path.isfile(os.path.join(base, "model", "saved_model.pb"))
  assert sorted(os.listdir(os.path.join(base, "export", "cifar10"))) == ["1"]

  # --job-dir wins: nothing new lands in the AIP_* directories.
  job_dir = str(tmp_path / "job")
  assert task.main(flags + ["--job-dir", job_dir]) == 0
  assert os.path.isfile(os.path.join(job_dir, "export", "cifar10", "1", "saved_model.pb"))
  assert tf.train.latest_checkpoint(os.path.join(job_dir, "checkpoints"))
  assert len(os.listdir(os.path.join(base, "checkpoints"))) == 3  # checkpoint, .index, .data
  assert not os.path.exists(os.path.join(job_dir, "model"))


# ---------------------------------------------------------------- AIP_MODEL_DIR on GCS

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
  from trainer.data import pipeline as data  # pylint: disable=import-outside-toplevel
  from trainer import models as model_lib  # pylint: disable=import-outside-toplevel
  info = data.DatasetInfo("mnist", (28, 28, 1), tuple(str(i) for i in range(10)), 10, 10)
  path = str(tmp_path_factory.mktemp("sm") / "saved_model")
  export.write_saved_model(model_lib.create_model("tutorial", info.image_shape, 10), info, path)
  return path


def test_gcs_model_dir_is_replaced_old_pb_first_new_pb_last(emulator, bucket, saved_model,
                                                             monkeypatch):
  from standins.gcs_emulator import FaultProxy  # pylint: disable=import-outside-toplevel
  b = gcs.client().bucket(bucket)
  for name in ("out/model/saved_model.pb", "out/model/variables/variables.index", "out/model/x"):
    b.blob(name).upload_from_string(b"previous attempt")

  # A proxy with no faults, which records the order of requests and enforces
  # GCS's create-only preconditions (the emulator ignores them).
  with FaultProxy(emulator) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    assert storage.replace_dir(saved_model, f"gs://{bucket}/out/model/") == f"gs://{bucket}/out/model"
    deletes = [p.split("?")[0] for m, p in proxy.requests if m == "DELETE" and "%2Fmodel%2F" in p]
  assert deletes[0].endswith("out%2Fmodel%2Fsaved_model.pb")  # the old graph goes first

  objects = {o.name: o for o in gcs.client().list_blobs(bucket)}
  assert sorted(objects) == [f"out/model/{f}" for f in _files(saved_model)]  # nothing old, no staging
  generations = {n: int(o.generation) for n, o in objects.items()}
  assert generations.pop("out/model/saved_model.pb") > max(generations.values())


def test_local_model_dir_replacement_leaves_no_mix(saved_model, tmp_path):
  dest = tmp_path / "model"
  (dest / "variables").mkdir(parents=True)
  (dest / "variables" / "old.data").write_bytes(b"old")
  assert storage.replace_dir(saved_model, str(dest) + "/") == str(dest)
  assert _files(str(dest)) == _files(saved_model)
  assert os.listdir(tmp_path) == ["model"]


# ---------------------------------------------------------------- the job specs

def _spec(name: str) -> dict:
  with open(SPECS[name], encoding="utf-8") as f:
    return yaml.safe_load(f)


def _validate(spec: dict) -> custom_job.CustomJobSpec:
  """Vertex AI's CustomJobSpec proto; an unknown or misspelt field raises ParseError."""
  return custom_job.CustomJobSpec.wrap(json_format.ParseDict(spec, custom_job.CustomJobSpec.pb()()))


@pytest.mark.parametrize("name, replicas", [("custom-job.yaml", [1]),
                                            ("custom-job-multi-worker.yaml", [1, 1])])
def test_job_specs_are_valid_custom_job_specs_on_the_k8s_gpu(name, replicas):
  spec = _validate(_spec(name))
  assert [p.replica_count for p in spec.worker_pool_specs] == replicas
  with open(os.path.join(REPO, "k8s", "job.yaml"), encoding="utf-8") as f:
    assert "cloud.google.com/gke-accelerator: nvidia-l4" in f.read()
  for pool in spec.worker_pool_specs:
    assert (pool.machine_spec.machine_type, pool.machine_spec.accelerator_type.name,
            pool.machine_spec.accelerator_count) == ("g2-standard-4", "NVIDIA_L4", 1)
    assert not any(a.startswith("--job-dir") for a in pool.container_spec.args)  # AIP_* decide
  assert spec.base_output_directory.output_uri_prefix.startswith("gs://")
  # Its own account, writing only under runs/ (tests/test_least_privilege.py).
  assert spec.service_account == "cnn-trainer-vertex@PROJECT_ID.iam.gserviceaccount.com"
  # The commented-out Vertex AI TensorBoard line is valid once uncommented.
  with open(SPECS[name], encoding="utf-8") as f:
    uncommented = f.read().replace("# tensorboard: ", "tensorboard: ")
  assert _validate(yaml.safe_load(uncommented)).tensorboard.endswith("/tensorboards/TENSORBOARD_ID")
  if len(replicas) > 1:
    assert spec.scheduling.restart_job_on_worker_restart


def test_the_validator_rejects_a_misspelt_field():
  spec = copy.deepcopy(_spec("custom-job.yaml"))
  spec["workerPoolSpecs"][0]["replicaCont"] = spec["workerPoolSpecs"][0].pop("replicaCount")
  with pytest.raises(json_format.ParseError, match="replicaCont"):
    _validate(spec)


# ---------------------------------------------------------------- two replicas

def test_two_replicas_with_the_multi_worker_specs_args(tfds_dir, tmp_path):
  """Each pool's container args, run as Vertex AI would run them: its TF_CONFIG, CLUSTER_SPEC
  and AIP_* variables, two processes on 127.0.0.1; only --data-dir points at local data."""
  spec = _spec("custom-job-multi-worker.yaml")
  addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
  pools = {"workerpool0": addresses[:1], "workerpool1": addresses[1:]}
  base = str(tmp_path / "out")
  workers = []
  for i, (pool, task_type) in enumerate((("workerpool0", "chief"), ("workerpool1", "worker"))):
    args = [f"--data-dir={tfds_dir}" if a.startswith("--data-dir=") else a
            for a in spec["workerPoolSpecs"][i]["containerSpec"]["args"]]
    tf_config = {"cluster": {"chief": addresses[:1], "worker": addresses[1:]},
                 "environment": "cloud", "task": {"type": task_type, "index": 0, "trial": ""},
                 "job": spec}
    scratch = tmp_path / f"tmp{i}"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in VERTEX_VARIABLES}
    env.update(aip_env(base), TF_CONFIG=json.dumps(tf_config), TMPDIR=str(scratch),
               CLUSTER_SPEC=cluster_spec(pools, pool, 0), PYTHONUNBUFFERED="1")
    workers.append(Worker(pool, [sys.executable, "-m", "trainer.task", *args,
                                 "--epochs", "1", "--batch-size", "128"], env))
  try:
    codes = [w.wait(300) for w in workers]
  finally:
    stop_all(workers)
  assert codes == [0, 0], "\n".join(w.log[-3000:] for w in workers)
  metrics = _assert_vertex_layout(base, workers[0].log[-3000:])
  assert metrics["workers"] == 2
  assert "MultiWorkerMirroredStrategy, 2 workers (this is worker 1)" in workers[1].log
  assert os.listdir(tmp_path / "tmp1") == []  # the worker's scratch checkpoints are gone
