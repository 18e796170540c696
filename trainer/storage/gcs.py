"""Google Cloud Storage: the client, preflight checks, listing, small records, error classification.

Publishing and sweeping live in `trainer.storage.gcs_publish`; callers use both through
`trainer.storage.api`. Nothing here imports trainer.storage.api, and google libraries
are imported lazily, so `import trainer.storage.api` stays cheap.

Failures are classified once (`classified`): a missing bucket, a missing
permission and credentials that cannot be obtained (a wrong Workload Identity
binding) are `errors.StorageError` (exit 2); an unreachable GCS, 429 and 5xx
past the retries, or a metadata server not ready yet are
`errors.TransientError` (exit 142), which the Job retries.

The client is created lazily. With STORAGE_EMULATOR_HOST set (tests, against
`gcp-storage-emulator`) it talks to the emulator anonymously; otherwise it uses
Application Default Credentials, which on GKE come from Workload Identity.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Iterator, Optional

from trainer import environment
from trainer import errors
from trainer.storage import versions

log = logging.getLogger(__name__)

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
# HTTP statuses worth a retry of the whole Job: request timeout, too many
# requests, and every 5xx.
_TRANSIENT_CODES = (408, 429)

_clients: dict = {}


def client():
  """The google-cloud-storage client for the current environment, created once.

  Keyed by STORAGE_EMULATOR_HOST, so tests that start emulators on different
  ports get a client for each.

  Raises:
    StorageError: no credentials could be found outside the emulator.
  """
  from google.cloud import storage as gcs_storage  # pylint: disable=import-outside-toplevel

  # Read at each call: tests start emulators on different ports as they go.
  emulator = environment.read().storage_emulator_host
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


def retry(deadline_s: float = RETRY_DEADLINE_S):
  from google.cloud.storage.retry import DEFAULT_RETRY  # pylint: disable=import-outside-toplevel
  return DEFAULT_RETRY.with_timeout(deadline_s)


def call_options(deadline_s: float = RETRY_DEADLINE_S) -> dict:
  """The keyword arguments of one GCS request: retries of transient errors for
  `deadline_s` seconds, and REQUEST_TIMEOUT_S per HTTP request."""
  return {"retry": retry(deadline_s), "timeout": REQUEST_TIMEOUT_S}


def exceptions():
  """google.api_core.exceptions (NotFound, PreconditionFailed, ...), loaded on first use."""
  import google.api_core.exceptions as api  # pylint: disable=import-outside-toplevel
  return api


def is_transient(e: BaseException) -> bool:
  """Whether `e` means GCS (or the credentials behind it) failed in a way a later try can fix.

  Connection refused or reset, timeouts, 408/429/5xx, retries that ran out
  (RetryError), and the auth library's TransportError, e.g. GKE's metadata
  server not answering yet in a pod's first seconds. google-auth's
  compute-engine credentials wrap that last one in a RefreshError whose text
  says "metadata server unavailable" (google/auth/compute_engine/_metadata.py).
  """
  api = exceptions()
  import google.auth.exceptions as auth  # pylint: disable=import-outside-toplevel
  import requests  # pylint: disable=import-outside-toplevel
  if isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError,
                    auth.TransportError, api.RetryError, api.ServerError)):
    return True
  if isinstance(e, api.GoogleAPICallError):
    return e.code in _TRANSIENT_CODES
  if isinstance(e, auth.RefreshError):
    return e.retryable or any(isinstance(c, auth.TransportError) and "unavailable" in str(c)
                              for c in _causes(e))
  return False


def _causes(e: BaseException) -> Iterator[BaseException]:
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    yield e
    e = e.__cause__ or e.__context__


@contextlib.contextmanager
def classified(where: str, bucket_name: str, needs: str):
  """Turns GCS and credential failures into errors that name the cause and the fix.

  Args:
    where: what was being done, for the message ("--publish-dir gs://b/models").
    bucket_name: the bucket.
    needs: the permissions the operation needs, for the Forbidden message.

  Raises:
    TransientError: `is_transient`; the Job retries the pod (exit 142).
    StorageError: a missing bucket or permission, or credentials that cannot
      be refreshed (exit 2: a retry cannot fix them).
  """
  api = exceptions()
  import google.auth.exceptions as auth  # pylint: disable=import-outside-toplevel
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
  except Exception as e:  # pylint: disable=broad-except
    if is_transient(e):
      raise errors.TransientError(
          f"{where}: GCS could not be reached or failed temporarily ({type(e).__name__}: "
          f"{first_line(e)}); exiting with {errors.EXIT_TRANSIENT} so that the Job retries "
          "(check the network, or STORAGE_EMULATOR_HOST if you use an emulator).") from e
    if isinstance(e, auth.RefreshError):
      raise errors.StorageError(
          f"{where}: could not obtain Google Cloud credentials ({first_line(e)}). On GKE "
          "this is Workload Identity: check that the pod's Kubernetes service account has "
          "the annotation iam.gke.io/gcp-service-account naming the Google service account, "
          "and that this Google service account grants roles/iam.workloadIdentityUser to "
          "serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA].") from e
    raise


def ensure_writable_dir(uri: str, what: str, retry_deadline_s: float = PREFLIGHT_RETRY_DEADLINE_S,
              gcs_client=None) -> None:
  """Proves that `uri`'s bucket exists and that objects can be written under it.

  Writes and deletes a small probe object under the prefix: the only check
  that covers both storage.objects.create and storage.objects.delete, which
  publishing needs, without requiring permission to read the bucket's IAM
  policy.

  Args:
    uri: gs://BUCKET[/prefix].
    what: the flag it came from ("--publish-dir"), for the message.
    retry_deadline_s: seconds of in-process retries of transient errors.
    gcs_client: a google-cloud-storage client to use instead of `client()`
      (tests: real credentials against a local endpoint).

  Raises:
    StorageError: the bucket does not exist, a permission is missing, or the
      credentials cannot be obtained. The message names the bucket and the fix.
    TransientError: GCS could not be reached or kept failing temporarily.
  """
  bucket_name, prefix = versions.split_gcs(uri)
  probe = object_name(prefix, f".write-probe-{uuid.uuid4().hex}")
  options = call_options(retry_deadline_s)
  with classified(f"{what} {uri}", bucket_name,
                   "storage.objects.create and storage.objects.delete, e.g. "
                   "roles/storage.objectUser"):
    blob = (gcs_client or client()).bucket(bucket_name).blob(probe)
    # if_generation_match=0: create-only, which also makes the upload safe to retry.
    blob.upload_from_string(b"ok", if_generation_match=0, **options)
    blob.delete(**options)


def list_versions(base: str) -> list[int]:
  """Version numbers under a model's base path: its integer "directory" names, sorted.

  Lists with a delimiter, so only the names directly under `base` are read,
  not every object of every version. Incomplete versions count too: their
  number is taken.

  Raises:
    StorageError: the bucket does not exist or cannot be listed.
    TransientError: GCS could not be reached.
  """
  bucket_name, prefix = versions.split_gcs(base)
  prefix = prefix + "/" if prefix else ""
  with classified(f"cannot list {base}", bucket_name, "storage.objects.list"):
    pages = client().list_blobs(bucket_name, prefix=prefix, delimiter="/", **call_options())
    for _ in pages:  # prefixes fill in as the pages are read
      pass
    names = [p[len(prefix):].rstrip("/") for p in pages.prefixes]
  return sorted(int(n) for n in names if versions.is_version_name(n))


def join(*parts: str) -> str:
  """gs://bucket/a joined with b, c: gs://bucket/a/b/c (one '/' between parts)."""
  return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def object_name(prefix: str, name: str) -> str:
  """The name of object `name` under `prefix` within a bucket ('' is the bucket's root)."""
  return f"{prefix}/{name}" if prefix else name


@contextlib.contextmanager
def _object(path: str, verb: str, needs: str) -> Iterator:
  """The blob at gs://BUCKET/NAME, with its failures `classified` as 'cannot VERB PATH'."""
  bucket_name, name = versions.split_gcs(path)
  with classified(f"cannot {verb} {path}", bucket_name, needs):
    yield client().bucket(bucket_name).blob(name)


# Replacing an object is a create and a delete of the old generation.
_WRITE_NEEDS = "storage.objects.create and storage.objects.delete, e.g. roles/storage.objectUser"


def write_text(path: str, text: str, retry_deadline_s: float = RETRY_DEADLINE_S) -> None:
  """Uploads `text` as one object; a GCS upload is atomic (readers see old or new).

  Through google-cloud-storage, as everything else here: its failures are
  `classified`, where tf.io.gfile's ended a run with a traceback and
  exit 1 (config.json, metrics.json, serving.rollout's models.config and
  records). Retrying is safe: each try writes the same whole object.

  Raises:
    StorageError: the bucket does not exist or a permission is missing (exit 2).
    TransientError: GCS could not be reached or kept failing (exit 142).
  """
  with _object(path, "write", _WRITE_NEEDS) as blob:
    blob.upload_from_string(text.encode("utf-8"), content_type="text/plain; charset=utf-8",
                            **call_options(retry_deadline_s))


def object_exists(path: str, retry_deadline_s: float = RETRY_DEADLINE_S) -> bool:
  """Whether the object `path` exists (False too if its bucket does not).

  Raises:
    StorageError: a permission is missing (exit 2).
    TransientError: GCS could not be reached or kept failing (exit 142).
  """
  with _object(path, "read", "storage.objects.get") as blob:
    return blob.exists(**call_options(retry_deadline_s))


def read_text(path: str, retry_deadline_s: float = RETRY_DEADLINE_S) -> Optional[str]:
  """The object's text, or None if there is no such object (or bucket: callers
  that need the bucket check it first, as the trainer's preflight does).

  Raises:
    StorageError: a permission is missing (exit 2).
    TransientError: GCS could not be reached or kept failing (exit 142).
  """
  with _object(path, "read", "storage.objects.get") as blob:
    try:
      return blob.download_as_bytes(**call_options(retry_deadline_s)).decode("utf-8")
    except exceptions().NotFound:
      return None


def first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else "no details"
