"""Google Cloud Storage: preflight checks and publishing exports for TF Serving.

TF Serving polls a model's base path (`gs://BUCKET/models/<name>/`) and loads
every integer-named "directory" it finds there. GCS has no directories and no
atomic rename, so a version must never become visible half-written:

1. Every file of the SavedModel is uploaded under a staging prefix beside the
   versions, `<base>/.staging-<version>-<random>/`. TF Serving ignores it
   because its name is not an integer.
2. The staged objects are then copied server-side into `<base>/<version>/`:
   every other object first and `saved_model.pb` LAST. A version without its
   `saved_model.pb` cannot load: an attempt that sees the prefix early fails
   and TF Serving retries it (--max_num_load_retries), whereas the opposite
   order lets it load a graph whose variables are not there yet and serve
   garbage (tensorflow/serving#1086). Once the pb lands, everything else is
   already in place.
   Uploading straight into `<version>/` in the same order would also work,
   but the window in which the version prefix exists without its pb would
   then last as long as the uploads over the network (minutes for a large
   model); with server-side copies it shrinks to a few metadata operations.
3. The staging objects are deleted.

Versions only grow and are never overwritten: `publish_version` refuses a
version that already has objects, and every copy carries
`if_generation_match=0`, so GCS itself rejects a copy onto an existing object
if another publisher races us. If anything fails, every object written under
`<version>/` and under the staging prefix is deleted before the error is
re-raised, so a failed publish leaves no version behind. (A process killed
outright can leave a `.staging-*` prefix; TF Serving ignores it and it can be
deleted by hand.)

The client is created lazily. With STORAGE_EMULATOR_HOST set (tests, against
`gcp-storage-emulator`) it talks to the emulator anonymously; otherwise it uses
Application Default Credentials, which on GKE come from Workload Identity.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import Iterator, Optional

from trainer import errors
from trainer import storage

log = logging.getLogger(__name__)

# The file TF Serving checks to decide that a version is loadable.
SAVED_MODEL_PB = "saved_model.pb"
# Project name sent to the emulator, which ignores it (GCS needs a project only
# to create or list buckets, which this module never does).
EMULATOR_PROJECT = "emulator"
# Seconds a single HTTP request may take: (connect, read).
REQUEST_TIMEOUT_S = (10.0, 120.0)
# Total seconds of retries (with exponential backoff) for transient errors
# (connection errors, 429, 5xx) on one operation, after which it fails.
RETRY_DEADLINE_S = 60.0
# Preflight runs before training starts: an unreachable GCS should fail the
# job within seconds, not after a minute of retries.
PREFLIGHT_RETRY_DEADLINE_S = 15.0

_clients: dict = {}


def client():
  """The google-cloud-storage client for the current environment, created once.

  Keyed by STORAGE_EMULATOR_HOST, so tests that start emulators on different
  ports get a client for each.

  Raises:
    StorageError: no credentials could be found outside the emulator.
  """
  from google.cloud import storage as gcs_storage  # pylint: disable=import-outside-toplevel

  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator not in _clients:
    if emulator:
      from google.auth.credentials import AnonymousCredentials  # pylint: disable=import-outside-toplevel
      _clients[emulator] = gcs_storage.Client(project=EMULATOR_PROJECT,
                                              credentials=AnonymousCredentials())
    else:
      import google.auth.exceptions  # pylint: disable=import-outside-toplevel
      try:
        _clients[emulator] = gcs_storage.Client()
      except google.auth.exceptions.DefaultCredentialsError as e:
        raise errors.StorageError(
            "no Google Cloud credentials found for gs:// paths: run `gcloud auth "
            "application-default login`, or on GKE run as a Kubernetes service account "
            "bound to a Google service account with Workload Identity.") from e
  return _clients[emulator]


def _retry(deadline_s: float = RETRY_DEADLINE_S):
  from google.cloud.storage.retry import DEFAULT_RETRY  # pylint: disable=import-outside-toplevel
  return DEFAULT_RETRY.with_timeout(deadline_s)


def _connection_errors() -> tuple[type[BaseException], ...]:
  """Exceptions meaning GCS could not be reached or did not answer in time."""
  import google.api_core.exceptions as api  # pylint: disable=import-outside-toplevel
  import google.auth.exceptions  # pylint: disable=import-outside-toplevel
  import requests  # pylint: disable=import-outside-toplevel
  return (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError,
          google.auth.exceptions.TransportError, api.RetryError, api.ServiceUnavailable)


def preflight(uri: str, what: str) -> None:
  """Proves that `uri`'s bucket exists and that objects can be written under it.

  Writes and deletes a small probe object under the prefix: the only check
  that covers both storage.objects.create and storage.objects.delete, which
  publishing needs, without requiring permission to read the bucket's IAM
  policy.

  Args:
    uri: gs://BUCKET[/prefix].
    what: the flag it came from ("--publish-dir"), for the message.

  Raises:
    StorageError: the bucket does not exist, a permission is missing, or GCS
      could not be reached. The message names the bucket and the fix.
  """
  bucket_name, prefix = storage.split_gcs(uri)
  probe = _join(prefix, f".write-probe-{uuid.uuid4().hex}")
  retry = _retry(PREFLIGHT_RETRY_DEADLINE_S)
  try:
    with _bucket_errors(f"{what} {uri}", bucket_name,
                        "storage.objects.create and storage.objects.delete, e.g. "
                        "roles/storage.objectUser"):
      blob = client().bucket(bucket_name).blob(probe)
      # if_generation_match=0: create-only, which also makes the upload safe to retry.
      blob.upload_from_string(b"ok", if_generation_match=0, retry=retry, timeout=REQUEST_TIMEOUT_S)
      blob.delete(retry=retry, timeout=REQUEST_TIMEOUT_S)
  except _connection_errors() as e:
    raise errors.StorageError(
        f"{what} {uri}: GCS could not be reached ({type(e).__name__}: "
        f"{_first_line(e)}): check the network, or STORAGE_EMULATOR_HOST if you use "
        "an emulator.") from e


def list_versions(base: str) -> list[int]:
  """Version numbers under a model's base path: its integer "directory" names, sorted.

  Lists with a delimiter, so only the names directly under `base` are read,
  not every object of every version.

  Raises:
    StorageError: the bucket does not exist or cannot be listed. Connection
      errors propagate unchanged: they are worth a retry of the job.
  """
  bucket_name, prefix = storage.split_gcs(base)
  prefix = prefix + "/" if prefix else ""
  with _bucket_errors(f"cannot list {base}", bucket_name, "storage.objects.list"):
    pages = client().list_blobs(bucket_name, prefix=prefix, delimiter="/", retry=_retry(),
                                timeout=REQUEST_TIMEOUT_S)
    for _ in pages:  # prefixes fill in as the pages are read
      pass
    names = [p[len(prefix):].rstrip("/") for p in pages.prefixes]
  return sorted(int(n) for n in names if n.isdigit())


@contextlib.contextmanager
def _bucket_errors(where: str, bucket_name: str, needs: str):
  """Turns GCS's NotFound and Forbidden into StorageErrors naming the bucket and the fix.

  Args:
    where: what was being done, for the message ("--publish-dir gs://b/models").
    bucket_name: the bucket.
    needs: the permissions the operation needs, for the Forbidden message.
  """
  import google.api_core.exceptions as api  # pylint: disable=import-outside-toplevel
  try:
    yield
  except api.NotFound as e:
    raise errors.StorageError(
        f"{where}: bucket gs://{bucket_name} does not exist: create it with "
        f"`gcloud storage buckets create gs://{bucket_name}` or fix the bucket name.") from e
  except api.Forbidden as e:
    raise errors.StorageError(
        f"{where}: permission denied on bucket gs://{bucket_name} (needs {needs}): grant it "
        "to the Google service account that the pod's Kubernetes service account "
        "impersonates through Workload Identity, or to your own account.") from e


def publish_version(src_dir: str, base: str, version: int) -> str:
  """Publishes a local SavedModel directory as `base/<version>/` (see the module docstring).

  Args:
    src_dir: local directory holding saved_model.pb, variables/ and the rest.
    base: the model's base path, gs://BUCKET/models/<name>.
    version: the version to create; it must have no objects yet.

  Returns:
    The version's path, gs://BUCKET/models/<name>/<version>.

  Raises:
    FileExistsError: the version already has objects (nothing is overwritten).
    ValueError: `src_dir` holds no saved_model.pb.
    Any error of the upload or copy, after everything written was deleted.
  """
  bucket_name, prefix = storage.split_gcs(base)
  bucket = client().bucket(bucket_name)
  final = _join(prefix, str(version))
  if any(True for _ in client().list_blobs(bucket_name, prefix=final + "/", max_results=1,
                                           retry=_retry(), timeout=REQUEST_TIMEOUT_S)):
    raise FileExistsError(
        f"version {version} already exists at gs://{bucket_name}/{final}/; not overwriting it")
  files = sorted(_relative_files(src_dir))
  if SAVED_MODEL_PB not in files:
    raise ValueError(f"{src_dir} is not a SavedModel directory: it has no {SAVED_MODEL_PB}")
  # saved_model.pb last: see the module docstring.
  files.remove(SAVED_MODEL_PB)
  files.append(SAVED_MODEL_PB)

  staging = _join(prefix, f"{storage.STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
  written: list = []  # destination blobs a copy request was sent for
  try:
    for name in files:
      blob = bucket.blob(f"{staging}/{name}")
      blob.upload_from_filename(os.path.join(src_dir, name), if_generation_match=0,
                                retry=_retry(), timeout=REQUEST_TIMEOUT_S)
    for name in files:
      _copy(bucket, f"{staging}/{name}", f"{final}/{name}", written)
  except BaseException:
    log.warning("Publishing version %d to %s failed; deleting what was written.", version, base)
    for blob in written:
      _delete_quietly(blob)
    _delete_prefix_quietly(bucket, staging + "/")
    raise
  _delete_prefix_quietly(bucket, staging + "/")
  return f"gs://{bucket_name}/{final}"


def _copy(bucket, src_name: str, dst_name: str, written: list) -> None:
  """Server-side copy of one object; records the destination for cleanup first.

  `rewrite` rather than `copy_blob`: it works for objects of any size and
  across storage classes, continuing with a token until done.
  """
  import google.api_core.exceptions as api  # pylint: disable=import-outside-toplevel

  src, dst = bucket.blob(src_name), bucket.blob(dst_name)
  written.append(dst)  # a request that fails after the server acted still leaves an object
  token: Optional[str] = None
  try:
    while True:
      token, _, _ = dst.rewrite(src, token=token, if_generation_match=0, retry=_retry(),
                                timeout=REQUEST_TIMEOUT_S)
      if token is None:
        return
  except api.PreconditionFailed:
    written.remove(dst)  # the object is another publisher's: leave it alone
    raise


def _relative_files(root: str) -> Iterator[str]:
  """Paths of the files under `root`, relative to it, with '/' separators."""
  for dirpath, _, filenames in os.walk(root):
    for filename in filenames:
      yield os.path.relpath(os.path.join(dirpath, filename), root).replace(os.sep, "/")


def _join(prefix: str, name: str) -> str:
  return f"{prefix}/{name}" if prefix else name


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else "no details"


def _delete_quietly(blob) -> None:
  """Deletes one object during cleanup; a missing object is already the goal."""
  import google.api_core.exceptions as api  # pylint: disable=import-outside-toplevel
  try:
    blob.delete(retry=_retry(), timeout=REQUEST_TIMEOUT_S)
  except api.NotFound:
    pass
  except Exception as e:  # pylint: disable=broad-except
    # Cleanup must not mask the error that caused it.
    log.error("Could not delete gs://%s/%s during cleanup: %s", blob.bucket.name, blob.name, e)


def _delete_prefix_quietly(bucket, prefix: str) -> None:
  try:
    blobs = list(client().list_blobs(bucket.name, prefix=prefix, retry=_retry(),
                                     timeout=REQUEST_TIMEOUT_S))
  except Exception as e:  # pylint: disable=broad-except
    log.error("Could not list gs://%s/%s for cleanup: %s", bucket.name, prefix, e)
    return
  for blob in blobs:
    _delete_quietly(blob)
