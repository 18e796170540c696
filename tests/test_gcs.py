"""GCS publishing and preflight against a real `gcp-storage-emulator` process.

Everything goes over real sockets on 127.0.0.1 through google-cloud-storage.
Failures that the emulator cannot produce by itself (a 403, a copy that fails
halfway) come from `FaultProxy`, a real HTTP proxy in front of the emulator
that forwards every request and answers chosen ones with an error instead.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, make_config
from ports import refusing_socket
from trainer import data
from trainer import errors
from trainer import export
from trainer import gcs
from trainer import model as model_lib
from trainer import storage
from trainer import synthetic
from trainer import train
from standins.gcs_emulator import FaultProxy

MNIST = data.DatasetInfo("mnist", (28, 28, 1), tuple(str(i) for i in range(10)), 10, 10)


def _objects(bucket_name, prefix=""):
  """{name: blob} of every object under `prefix`, read from the emulator."""
  return {b.name: b for b in gcs.client().list_blobs(bucket_name, prefix=prefix)}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
  """A real exported SavedModel directory (tutorial CNN, MNIST shape) and its model."""
  model = model_lib.create_model("tutorial", MNIST.image_shape, 10)
  path = str(tmp_path_factory.mktemp("sm") / "saved_model")
  export.write_saved_model(model, MNIST, path)
  return path, model


def _local_files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_publish_copies_every_file_and_saved_model_pb_last(bucket, saved_model, tmp_path):
  src, model = saved_model
  path = gcs.publish_version(src, f"gs://{bucket}/models/mnist", 1)

  assert path == f"gs://{bucket}/models/mnist/1"
  objects = _objects(bucket, "models/mnist/")
  files = _local_files(src)
  assert sorted(objects) == [f"models/mnist/1/{f}" for f in files]  # nothing staged is left
  for f in files:
    local_md5 = base64.b64encode(hashlib.md5(open(os.path.join(src, f), "rb").read()).digest())
    assert objects[f"models/mnist/1/{f}"].md5_hash == local_md5.decode(), f
  # The emulator stamps each object with the time it was written (in ns):
  # saved_model.pb must be the last object written into the version.
  generations = {name: int(b.generation) for name, b in objects.items()}
  pb = generations.pop("models/mnist/1/saved_model.pb")
  assert pb > max(generations.values())
  # So TF Serving finds the warm-up requests on its first load of the version.
  assert "models/mnist/1/assets.extra/tf_serving_warmup_requests" in generations

  # What was published is a SavedModel that serves the same predictions.
  local = tmp_path / "downloaded"
  for name, blob in objects.items():
    target = local / name[len("models/mnist/1/"):]
    target.parent.mkdir(parents=True, exist_ok=True)
    blob.download_to_filename(str(target))
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  served = tf.saved_model.load(str(local)).signatures["serving_default"](images=tf.constant(images))
  np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(model(images)).numpy(),
                             atol=1e-5)


def test_publish_never_overwrites_a_version(bucket, saved_model):
  src, _ = saved_model
  gcs.client().bucket(bucket).blob("models/mnist/1/saved_model.pb").upload_from_string(b"old")
  with pytest.raises(FileExistsError, match="version 1 already exists"):
    gcs.publish_version(src, f"gs://{bucket}/models/mnist", 1)
  objects = _objects(bucket, "models/mnist/")
  assert list(objects) == ["models/mnist/1/saved_model.pb"]
  assert objects["models/mnist/1/saved_model.pb"].download_as_bytes() == b"old"


def test_failed_upload_leaves_no_version_and_no_staging(emulator, bucket, saved_model, tmp_path,
                                                        monkeypatch):
  src, _ = saved_model
  broken = tmp_path / "broken"
  shutil.copytree(src, broken)
  # A file that disappears: listed, but opening it fails partway through the
  # upload, after the files sorted before it were already staged.
  os.symlink(tmp_path / "missing", broken / "variables" / "variables.zz-gone")
  with FaultProxy(emulator) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(FileNotFoundError):
      gcs.publish_version(str(broken), f"gs://{bucket}/models/mnist", 1)
  uploads = [p for m, p in proxy.requests if m == "POST" and "/upload/" in p]
  assert len(uploads) >= 3, proxy.requests  # real objects were staged, then deleted
  assert not any("rewriteTo" in p for _, p in proxy.requests)
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  assert _objects(bucket) == {}


def test_failed_copy_deletes_the_copied_objects(emulator, bucket, saved_model, monkeypatch):
  src, _ = saved_model
  # The third server-side copy into the version is refused with a 403.
  with FaultProxy(emulator, match=lambda method, path: "/rewriteTo/" in path, nth=3) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    import google.api_core.exceptions as api
    with pytest.raises(api.Forbidden):
      gcs.publish_version(src, f"gs://{bucket}/models/mnist", 1)
  copies = [p for _, p in proxy.requests if "/rewriteTo/" in p]
  assert len(copies) == 3  # two objects had reached models/mnist/1/ before the failure
  deletes = [p for m, p in proxy.requests if m == "DELETE" and "%2F1%2F" in p]
  assert len(deletes) >= 2
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  assert _objects(bucket) == {}
  assert storage.list_versions(f"gs://{bucket}/models/mnist") == []


def test_list_versions_reads_integer_directories_only(bucket):
  b = gcs.client().bucket(bucket)
  for name in ("models/m/3/saved_model.pb", "models/m/12/variables/variables.index",
               "models/m/.staging-13-abcd/saved_model.pb", "models/m/notes/readme.txt",
               "models/m/7", "models/other/40/saved_model.pb"):
    b.blob(name).upload_from_string(b"x")
  assert storage.list_versions(f"gs://{bucket}/models/m") == [3, 12]
  assert storage.list_versions(f"gs://{bucket}/models/m/") == [3, 12]
  assert storage.list_versions(f"gs://{bucket}/models/none") == []


def test_versions_only_grow_across_local_and_gcs_bases(bucket, saved_model, tmp_path):
  src, model = saved_model
  gcs_base, local_base = f"gs://{bucket}/models/mnist", str(tmp_path / "export" / "mnist")
  gcs.client().bucket(bucket).blob("models/mnist/4/saved_model.pb").upload_from_string(b"x")
  assert storage.next_version([local_base, gcs_base]) == 5
  version, paths = export.export(model, MNIST, "tutorial", [local_base, gcs_base])
  assert version == 5 and paths == [os.path.join(local_base, "5"), f"{gcs_base}/5"]
  assert storage.next_version([local_base, gcs_base]) == 6
  assert export.export(model, MNIST, "tutorial", [gcs_base])[0] == 6
  assert storage.list_versions(gcs_base) == [4, 5, 6]


def test_preflight_writes_and_removes_a_probe(bucket):
  gcs.preflight(f"gs://{bucket}/models", "--publish-dir")
  gcs.preflight(f"gs://{bucket}", "--publish-dir")
  assert _objects(bucket) == {}


def test_preflight_names_a_missing_bucket(emulator, monkeypatch):
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  with pytest.raises(errors.StorageError) as e:
    gcs.preflight("gs://no-such-bucket-x1/models", "--publish-dir")
  message = str(e.value)
  assert "\n" not in message
  assert "bucket gs://no-such-bucket-x1 does not exist" in message
  assert "gcloud storage buckets create gs://no-such-bucket-x1" in message


def test_preflight_names_the_missing_permission(emulator, bucket, monkeypatch):
  with FaultProxy(emulator, match=lambda method, path: "/upload/" in path) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.StorageError) as e:
      gcs.preflight(f"gs://{bucket}/models", "--publish-dir")
  message = str(e.value)
  assert f"permission denied on bucket gs://{bucket}" in message
  assert "storage.objects.create" in message and "storage.objects.delete" in message
  assert "Workload Identity" in message and "\n" not in message


def test_preflight_reports_unreachable_gcs(monkeypatch):
  with refusing_socket() as nothing_listens:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{nothing_listens.getsockname()[1]}")
    monkeypatch.setattr(gcs, "PREFLIGHT_RETRY_DEADLINE_S", 1.0)  # the default is 15 s of retries
    started = time.time()
    with pytest.raises(errors.StorageError, match="GCS could not be reached"):
      gcs.preflight("gs://bkt/models", "--job-dir")
  assert time.time() - started < 10


@pytest.fixture(scope="module")
def small_tfds(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_small"))
  synthetic.write_tfds("cifar10", data_dir, 256, 64)
  return data_dir


def test_training_publishes_to_gcs(bucket, small_tfds, tmp_path):
  job_dir = str(tmp_path / "job")
  config = make_config(small_tfds, job_dir, epochs=1, publish_dir=f"gs://{bucket}/models")
  metrics = train.run(config)
  assert metrics["export"] == {
      "version": 1,
      "paths": [os.path.join(job_dir, "export", "cifar10", "1"), f"gs://{bucket}/models/cifar10/1"]}
  published = sorted(n[len("models/cifar10/1/"):] for n in _objects(bucket, "models/cifar10/"))
  assert published == _local_files(os.path.join(job_dir, "export", "cifar10", "1"))
  assert json.load(open(os.path.join(job_dir, "metrics.json")))["export"] == metrics["export"]


def test_cli_refuses_a_missing_publish_bucket(emulator, small_tfds, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "trainer.task", "--data-dir", small_tfds, "--job-dir",
       str(tmp_path / "job"), "--epochs", "1", "--publish-dir", "gs://missing-bkt-x2/models"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "STORAGE_EMULATOR_HOST": emulator})
  assert proc.returncode == 2, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert "--publish-dir gs://missing-bkt-x2/models: bucket gs://missing-bkt-x2 does not exist" in last
  assert not os.path.exists(tmp_path / "job" / "checkpoints")  # failed before training
