"""GCS publishing and preflight against a real `gcp-storage-emulator` process.

Everything goes over real sockets on 127.0.0.1 through google-cloud-storage.
Failures that the emulator cannot produce by itself (a 403 or 503, a lost
response, a refused connection, a request that hangs until its client is
killed, GCS's 412 on a create-only copy) come from `FaultProxy`, a real HTTP
proxy in front of the emulator (tests/standins/gcs_emulator.py).
"""

import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import google_crc32c

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, make_config
from ports import refusing_socket
from trainer.data import pipeline as data
from trainer import errors
from trainer import export
from trainer.storage import gcs
from trainer import models as model_lib
from trainer.storage import api as storage
from trainer.data import synthetic
from trainer.training import train
from standins.gcs_emulator import FaultProxy
from standins.gcs_emulator import Rule
from standins.gcs_emulator import rewrite_to

MNIST = data.DatasetInfo("mnist", (28, 28, 1), tuple(str(i) for i in range(10)), 10, 10)
# The job whose export the `saved_model` fixture is; its run info names it.
JOB_A = "/jobs/a"


def _objects(bucket_name, prefix=""):
  """{name: blob} of every object under `prefix`, read from the emulator."""
  return {b.name: b for b in gcs.client().list_blobs(bucket_name, prefix=prefix)}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
  """A real exported SavedModel directory (tutorial CNN, MNIST shape) and its model."""
  model = model_lib.create_model("tutorial", MNIST.image_shape, 10)
  path = str(tmp_path_factory.mktemp("sm") / "saved_model")
  export.write_saved_model(model, MNIST, path, run_info={"job_dir": JOB_A})
  return path, model


def _local_files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_publish_copies_every_file_and_saved_model_pb_last(bucket, saved_model, tmp_path):
  src, model = saved_model
  path = storage.publish_version(src, f"gs://{bucket}/models/mnist", 1)

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
    storage.publish_version(src, f"gs://{bucket}/models/mnist", 1)
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
      storage.publish_version(str(broken), f"gs://{bucket}/models/mnist", 1)
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
    with pytest.raises(errors.StorageError, match="permission denied"):
      storage.publish_version(src, f"gs://{bucket}/models/mnist", 1)
  copies = [p for _, p in proxy.requests if "/rewriteTo/" in p]
  assert len(copies) == 3  # two objects had reached models/mnist/1/ before the failure
  deletes = [p for m, p in proxy.requests if m == "DELETE" and "%2F1%2F" in p]
  assert len(deletes) >= 2
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  assert _objects(bucket) == {}
  assert storage.list_versions(f"gs://{bucket}/models/mnist") == []


def _crc32c(path):
  return base64.b64encode(google_crc32c.Checksum(open(path, "rb").read()).digest()).decode()


def _assert_complete(bucket_name, version_prefix, src):
  """Every local file is under `version_prefix`/ with the local crc32c, and nothing else is."""
  objects = _objects(bucket_name, version_prefix + "/")
  files = _local_files(src)
  assert sorted(objects) == [f"{version_prefix}/{f}" for f in files]
  for f in files:
    assert objects[f"{version_prefix}/{f}"].crc32c == _crc32c(os.path.join(src, f)), f


def _requests_to(proxy, method, suffix):
  return [p for m, p in proxy.requests if m == method and p.split("?")[0].endswith(suffix)]


def test_a_lost_copy_response_is_retried_and_the_version_is_complete(emulator, bucket, saved_model,
                                                                     monkeypatch):
  """The copies of saved_model.pb and of the variables take effect, but their responses
  are lost. The client retries each; GCS answers 412 (the object exists), and the
  publisher recognises its own object by publish id and checksum."""
  src, _ = saved_model
  lost = [Rule("lost", rewrite_to("/saved_model.pb"), nth=1),
          Rule("lost", rewrite_to("/variables.data-00000-of-00001"), nth=1)]
  with FaultProxy(emulator, rules=lost) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    assert storage.publish_version(src, f"gs://{bucket}/models/mnist", 1).endswith("/mnist/1")
  assert [rule.fired for rule in lost] == [1, 1]
  pb_copies = [p for m, p in proxy.requests if rewrite_to("/saved_model.pb")(m, p)]
  assert len(pb_copies) == 2  # the lost one, and the retry GCS refused with 412
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  _assert_complete(bucket, "models/mnist/1", src)  # and no staging objects are left


def test_a_copy_onto_another_publishers_object_fails_and_leaves_theirs(emulator, bucket,
                                                                        saved_model, monkeypatch):
  """Another publisher writes into the same version while our copies are under way: our
  create-only copy gets 412, theirs stays untouched, and none of ours is left."""
  src, _ = saved_model
  theirs = "models/mnist/1/variables/variables.index"
  hold_first_copy = Rule("hold", lambda method, path: "/rewriteTo/" in path, nth=1)
  with FaultProxy(emulator, rules=[hold_first_copy]) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    failure = []

    def publish():
      try:
        storage.publish_version(src, f"gs://{bucket}/models/mnist", 1)
      except Exception as e:  # pylint: disable=broad-except
        failure.append(e)

    publisher = threading.Thread(target=publish)
    publisher.start()
    assert proxy.held.wait(60), proxy.requests  # uploads staged, first copy held
    blob = gcs.client().bucket(bucket).blob(theirs)  # through the proxy: only copies are held
    blob.metadata = {"trainer-publish-id": "another-publisher"}
    blob.upload_from_string(b"their index")
    proxy.release()
    publisher.join(60)
  assert len(failure) == 1 and isinstance(failure[0], FileExistsError), failure
  message = str(failure[0])
  assert "version 1" in message and "another publisher" in message and theirs in message
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  objects = _objects(bucket)
  assert list(objects) == [theirs]  # nothing of ours under 1/ or staging
  assert objects[theirs].download_as_bytes() == b"their index"
  assert objects[theirs].metadata == {"trainer-publish-id": "another-publisher"}


def test_cleanup_deletes_saved_model_pb_first(emulator, bucket, saved_model, monkeypatch):
  """The pb's copy takes effect but its response is lost, and the retry is refused (403):
  the version is complete on the server while the publish fails. Cleanup must make it
  unloadable before deleting the variables it needs."""
  src, _ = saved_model
  pb_copy = rewrite_to("/saved_model.pb")
  # Rules are tried in order; the second sees only the requests the first let pass.
  rules = [Rule("lost", pb_copy, nth=1), Rule("status", pb_copy, status=403, nth=1)]
  with FaultProxy(emulator, rules=rules) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.StorageError, match="permission denied"):
      storage.publish_version(src, f"gs://{bucket}/models/mnist", 1)
  deletes = [p.split("?")[0] for m, p in proxy.requests if m == "DELETE"]
  in_version = [p for p in deletes if "%2F1%2F" in p]
  assert in_version[0].endswith("%2F1%2Fsaved_model.pb"), deletes
  assert len(in_version) == len(_local_files(src))
  staging = [i for i, p in enumerate(deletes) if "%2F.staging-" in p]
  assert staging and min(staging) > deletes.index(in_version[-1])  # the version before staging
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  assert _objects(bucket) == {}


def test_a_failed_delete_during_cleanup_raises_naming_what_is_left(emulator, bucket, saved_model,
                                                                  monkeypatch):
  src, _ = saved_model
  stuck = "models/mnist/1/assets.extra/trainer_run.json"
  rules = [Rule("status", lambda method, path: "/rewriteTo/" in path, status=403, nth=3),
           Rule("status", lambda method, path: method == "DELETE" and
                path.split("?")[0].endswith(stuck.replace("/", "%2F")), status=403)]
  with FaultProxy(emulator, rules=rules) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.CleanupError) as e:
      storage.publish_version(src, f"gs://{bucket}/models/mnist", 1)
  message = str(e.value)
  assert f"gs://{bucket}/{stuck}" in message and "left 1 object(s) behind" in message
  assert "Forbidden" in message  # the failure that started the cleanup
  assert type(e.value.__cause__).__name__ == "Forbidden"
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  assert list(_objects(bucket)) == [stuck]  # every other delete was still tried


_GCS_PUBLISHER = """
import sys
from trainer.storage import api as storage
storage.publish_version(sys.argv[1], sys.argv[2], 1)
"""


def test_a_publisher_killed_mid_copy_is_swept_by_the_next_export_of_its_job(
    emulator, bucket, saved_model, monkeypatch, caplog):
  """SIGKILL while the copy of saved_model.pb hangs leaves 1/ without its pb and the
  staging prefix. Another job's sweep leaves them alone (young, not its own); the same
  job's next export sweeps both and publishes version 1 complete."""
  src, model = saved_model
  base = f"gs://{bucket}/models/mnist"
  with FaultProxy(emulator, rules=[Rule("hold", rewrite_to("/saved_model.pb"))]) as proxy:
    publisher = subprocess.Popen([sys.executable, "-c", _GCS_PUBLISHER, src, base], cwd=REPO,
                                 env={**os.environ, "STORAGE_EMULATOR_HOST": proxy.url},
                                 stderr=subprocess.PIPE, text=True)
    try:
      assert proxy.held.wait(120), publisher.stderr.read() if publisher.poll() else "no hold"
    finally:
      publisher.send_signal(signal.SIGKILL)
      publisher.communicate(timeout=30)
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  left = _objects(bucket, "models/mnist/")
  version = sorted(n for n in left if n.startswith("models/mnist/1/"))
  assert version == sorted(f"models/mnist/1/{f}" for f in _local_files(src)
                           if f != "saved_model.pb")
  assert any(n.startswith("models/mnist/.staging-1-") for n in left)
  assert storage.list_versions(base) == [1]  # its number is taken until swept

  assert storage.sweep(base, job_dir="/jobs/other") == []
  assert _objects(bucket, "models/mnist/").keys() == left.keys()

  caplog.set_level("INFO")
  run_info = {"job_dir": JOB_A, "global_step": 7, "weights_sha256": "abc"}
  version, paths = export.export(model, MNIST, "tutorial", [base], run_info=run_info)
  assert version == 1 and paths == [f"{base}/1"]
  assert "left by an earlier attempt of this job (/jobs/a)" in caplog.text
  assert f"Sweeping {base}/1 " in caplog.text and f"Sweeping {base}/.staging-1-" in caplog.text
  published = _objects(bucket, "models/mnist/")
  assert sorted(published) == [f"models/mnist/1/{f}" for f in _local_files(src)]


def test_sweep_spares_a_young_leftover_of_another_job_and_removes_a_stale_one(bucket):
  b = gcs.client().bucket(bucket)
  b.blob("models/m/2/saved_model.pb").upload_from_string(b"complete")
  b.blob("models/m/3/variables/variables.index").upload_from_string(b"x")
  b.blob("models/m/3/assets.extra/trainer_run.json").upload_from_string(
      json.dumps({"job_dir": "/jobs/other"}))
  b.blob("models/m/.staging-4-abcd/variables/variables.index").upload_from_string(b"x")
  base = f"gs://{bucket}/models/m"
  assert storage.sweep(base, job_dir=JOB_A) == []  # 1 h threshold: both may be in progress
  time.sleep(1.5)
  # A threshold of 1 s stands in for an hour: both leftovers are now "stale".
  assert storage.sweep(base, job_dir=JOB_A, stale_s=1.0) == [f"{base}/.staging-4-abcd",
                                                             f"{base}/3"]
  assert list(_objects(bucket)) == ["models/m/2/saved_model.pb"]  # a complete version stays


def test_records_are_written_whole_and_read_back_through_gcs(bucket):
  """config.json and metrics.json on a gs:// job dir: one object each, replaced whole."""
  path = f"gs://{bucket}/jobs/a/metrics.json"
  assert storage.read_json(path) is None and storage.read_text(path) is None  # not there yet
  assert not storage.exists(path)
  storage.write_json(path, {"epochs": 1, "classes": ["\u00e9t\u00e9", "b"]})
  assert storage.exists(path) and not storage.exists(f"gs://{bucket}/jobs/a")  # objects only
  assert storage.read_json(path) == {"epochs": 1, "classes": ["\u00e9t\u00e9", "b"]}
  storage.write_json(path, {"epochs": 2})
  assert storage.read_json(path) == {"epochs": 2}
  assert list(_objects(bucket, "jobs/a/")) == ["jobs/a/metrics.json"]  # no temporary sibling
  storage.write_text(f"gs://{bucket}/jobs/a/notes.txt", "not json")
  with pytest.raises(ValueError):
    storage.read_json(f"gs://{bucket}/jobs/a/notes.txt")


@pytest.mark.parametrize("operation", ["write", "read"])
def test_a_record_gcs_keeps_refusing_is_transient_and_names_the_object(emulator, bucket,
                                                                        monkeypatch, operation):
  """A 503 past the retries (1 s here, 60 s by default) exits 142 in one line: the Job
  retries the pod. It was tf.io.gfile's traceback and exit 1."""
  path = f"gs://{bucket}/jobs/a/metrics.json"
  storage.write_json(path, {"epochs": 1})
  with FaultProxy(emulator, rules=[Rule("status", status=503)]) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.TransientError) as e:
      if operation == "write":
        gcs.write_text(path, '{"epochs": 2}', retry_deadline_s=1.0)
      else:
        gcs.read_text(path, retry_deadline_s=1.0)
  message = str(e.value)
  assert message.startswith(f"cannot {operation} {path}: GCS could not be reached"), message
  assert "503" in message and "\n" not in message and e.value.exit_code == 142
  assert len(proxy.requests) >= 2  # retried in-process first
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  assert storage.read_json(path) == {"epochs": 1}  # a failed write left the old record


@pytest.mark.parametrize("operation, needs", [
    ("write", "storage.objects.create and storage.objects.delete"), ("read", "storage.objects.get"),
    ("exists", "storage.objects.get")])
def test_a_record_without_permission_names_the_permission_and_exits_2(
    emulator, bucket, monkeypatch, operation, needs):
  path = f"gs://{bucket}/jobs/a/config.json"
  storage.write_json(path, {"epochs": 1})
  with FaultProxy(emulator, match=lambda method, request_path: True) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.StorageError) as e:
      if operation == "write":
        storage.write_json(path, {"epochs": 2})
      elif operation == "read":
        storage.read_json(path)
      else:
        storage.exists(path)
  message = str(e.value)
  verb = "write" if operation == "write" else "read"
  assert message.startswith(f"cannot {verb} {path}: permission denied on bucket gs://{bucket}")
  assert f"(needs {needs}" in message and "\n" not in message and e.value.exit_code == 2
  # A 403 is not retried. (google-cloud-storage also reads the bucket's metadata in a
  # thread of its own, google/cloud/storage/_bucket_metadata_cache.py: not counted.)
  assert len([r for r in proxy.requests if not r[1].split("?")[0].endswith(f"/b/{bucket}")]) == 1


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
  gcs.ensure_writable_dir(f"gs://{bucket}/models", "--publish-dir")
  gcs.ensure_writable_dir(f"gs://{bucket}", "--publish-dir")
  assert _objects(bucket) == {}


def test_preflight_names_a_missing_bucket(emulator, monkeypatch):
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  with pytest.raises(errors.StorageError) as e:
    gcs.ensure_writable_dir("gs://no-such-bucket-x1/models", "--publish-dir")
  message = str(e.value)
  assert "\n" not in message
  assert "bucket gs://no-such-bucket-x1 does not exist" in message
  assert "gcloud storage buckets create gs://no-such-bucket-x1" in message


def test_preflight_names_the_missing_permission(emulator, bucket, monkeypatch):
  with FaultProxy(emulator, match=lambda method, path: "/upload/" in path) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.StorageError) as e:
      gcs.ensure_writable_dir(f"gs://{bucket}/models", "--publish-dir")
  message = str(e.value)
  assert f"permission denied on bucket gs://{bucket}" in message
  assert "storage.objects.create" in message and "storage.objects.delete" in message
  assert "Workload Identity" in message and "\n" not in message


def test_preflight_reports_unreachable_gcs(monkeypatch):
  with refusing_socket() as nothing_listens:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{nothing_listens.getsockname()[1]}")
    started = time.time()
    with pytest.raises(errors.TransientError, match="GCS could not be reached") as e:
      # 1 s of retries instead of the default 15 s.
      gcs.ensure_writable_dir("gs://bkt/models", "--job-dir", retry_deadline_s=1.0)
  assert "\n" not in str(e.value) and "the Job retries" in str(e.value)
  assert time.time() - started < 10


def test_preflight_calls_gcs_answering_503_transient(emulator, bucket, monkeypatch):
  with FaultProxy(emulator, rules=[Rule("status", status=503)]) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.TransientError) as e:
      gcs.ensure_writable_dir(f"gs://{bucket}/models", "--publish-dir", retry_deadline_s=1.0)
  message = str(e.value)
  assert message.startswith(f"--publish-dir gs://{bucket}/models: GCS could not be reached")
  assert "503" in message and "the Job retries" in message and "\n" not in message
  assert e.value.exit_code == errors.EXIT_TRANSIENT == 142
  assert len(proxy.requests) >= 2  # retried in-process first


# GKE's metadata server, when the Kubernetes service account may not impersonate the
# Google service account (no roles/iam.workloadIdentityUser binding).
_GKE_DENIAL = (b"Unable to generate access token; IAM returned 403 Forbidden: Permission "
               b"'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")

_PREFLIGHT_WITH_METADATA_CREDENTIALS = """
import sys
from google.auth import compute_engine
from google.cloud import storage
from trainer import errors
from trainer.storage import gcs
client = storage.Client(project="p", credentials=compute_engine.Credentials(),
                        client_options={"api_endpoint": sys.argv[1]})
try:
  gcs.ensure_writable_dir(sys.argv[2], "--publish-dir", gcs_client=client)
except errors.StorageError as e:
  print(type(e.__cause__).__name__)
  print(e)
"""


def test_preflight_explains_a_workload_identity_refresh_error(emulator, bucket):
  """Real google-auth machinery: compute-engine credentials, as on GKE, ask a metadata
  server (a local HTTP server, via GCE_METADATA_HOST) for a token and get GKE's 403.
  google-auth turns that into a RefreshError. A subprocess, because google-auth reads
  GCE_METADATA_HOST when it is imported."""

  class Metadata(http.server.BaseHTTPRequestHandler):
    """Answers what GKE's metadata server answers a pod whose binding is wrong: the
    universe and the service account's identity, but a 403 for its token."""

    def do_GET(self):  # noqa: N802
      if "/universe/universe-domain" in self.path:
        status, kind, body = 200, "text/plain", b"googleapis.com"
      elif self.path.split("?")[0].endswith("/service-accounts/default/"):
        status, kind, body = 200, "application/json", json.dumps(
            {"email": "trainer@p.iam.gserviceaccount.com", "aliases": ["default"],
             "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}).encode()
      else:
        status, kind, body = 403, "text/plain", _GKE_DENIAL
      self.send_response(status)
      self.send_header("Content-Type", kind)
      self.send_header("Metadata-Flavor", "Google")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    env["GCE_METADATA_HOST"] = f"127.0.0.1:{server.server_address[1]}"
    proc = subprocess.run(
        [sys.executable, "-c", _PREFLIGHT_WITH_METADATA_CREDENTIALS, emulator,
         f"gs://{bucket}/models"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  finally:
    server.shutdown()
    server.server_close()
  assert proc.returncode == 0, proc.stderr
  cause, message = proc.stdout.strip().split("\n")
  assert cause == "RefreshError"
  assert message.startswith(f"--publish-dir gs://{bucket}/models: could not obtain Google Cloud "
                            "credentials")
  assert "Workload Identity" in message and "iam.gke.io/gcp-service-account" in message
  assert "roles/iam.workloadIdentityUser" in message


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


def test_cli_exits_142_when_gcs_refuses_connections(small_tfds, tmp_path):
  """A transient failure (here: nothing listens at STORAGE_EMULATOR_HOST) exits 142, which
  k8s/job.yaml retries, with one line saying what failed; after ~15 s of retries."""
  with refusing_socket() as nothing_listens:
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.task", "--data-dir", small_tfds, "--job-dir",
         str(tmp_path / "job"), "--epochs", "1", "--publish-dir", "gs://b/models"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ,
             "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{nothing_listens.getsockname()[1]}"})
  assert proc.returncode == errors.EXIT_TRANSIENT == 142, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert "--publish-dir gs://b/models: GCS could not be reached" in last, proc.stderr
  assert "the Job retries" in last and "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "job" / "checkpoints")  # failed before training
