"""Create-only / compare-and-swap storage of one small object, locally and on GCS.

The storage under `trainer.storage.joblock`'s lease lock: one small JSON record at
one path, which can be created only if absent and replaced or deleted only
at the version last read, so that of two concurrent writers exactly one
wins and the other gets `Conflict`.

* `LocalStore`: creates with `os.link` (fails if the name exists) and
  replaces with `os.replace`, so a reader sees a whole record or none.
  Callers hold `atomic()`, an `fcntl.flock` on `<path>.mutex`, around each
  read-check-write. A record's version is its `token` field.
* `GcsStore`: every request carries `ifGenerationMatch` (0 to create), GCS's
  precondition (https://cloud.google.com/storage/docs/request-preconditions);
  a 412 becomes `Conflict`. A record's version is the object's generation.

Records are JSON objects holding a unique `token`; one that cannot be parsed
reads as `{"host": "(unreadable lock)"}`. Error messages name the object as
the job-dir lock, this module's one user. Like the other storage back ends,
this module does not import `trainer.storage.api`, and loads the google
libraries only on first GCS use.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Optional, Union

from trainer import errors
from trainer.storage import gcs
from trainer.storage import versions


class Conflict(Exception):
  """The object changed (or appeared) since it was read: a precondition failed."""


def open_store(path: str, retry_deadline_s: float) -> Union["LocalStore", "GcsStore"]:
  """The store for `path`: `GcsStore` for gs:// paths, `LocalStore` otherwise.

  Args:
    path: the object's local path or gs://BUCKET/name.
    retry_deadline_s: seconds of retries for transient GCS errors on one request.
  """
  return GcsStore(path, retry_deadline_s) if versions.is_gcs(path) else LocalStore(path)


def _parse(data: bytes) -> dict:
  # A record we cannot parse was not written by trainer.storage.joblock; never take it over.
  try:
    record = json.loads(data)
  except ValueError:
    record = None
  return record if isinstance(record, dict) else {"host": "(unreadable lock)"}


class LocalStore:
  """The object in a local directory; callers hold `atomic()` around each read-check-write."""

  def __init__(self, path: str):
    self.path = path

  @contextlib.contextmanager
  def atomic(self):
    import fcntl  # pylint: disable=import-outside-toplevel
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      fd = os.open(self.path + ".mutex", os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
      raise errors.StorageError(f"--job-dir: cannot create the lock {self.path} "
                                f"({e.strerror or e}): fix the directory's permissions.") from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)  # releases the flock

  def read(self) -> tuple[Optional[dict], Optional[str]]:
    """The record and its version (its token), or (None, None)."""
    try:
      with open(self.path, "rb") as f:
        record = _parse(f.read())
    except FileNotFoundError:
      return None, None
    return record, record.get("token")

  def write(self, data: bytes, expected: Optional[str]) -> str:
    """Creates the object (expected None) or replaces version `expected`; returns the new one.

    Raises:
      Conflict: the object exists (expected None) or is no longer at version `expected`.
    """
    tmp = f"{self.path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())  # the record is whole on disk before its name appears
    try:
      if expected is None:
        os.link(tmp, self.path)  # fails if the name exists: create-only
      elif self.read()[1] != expected:
        raise Conflict()
      else:
        os.replace(tmp, self.path)
    except FileExistsError:
      raise Conflict() from None
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    return json.loads(data)["token"]

  def delete(self, expected: str) -> None:
    """Deletes the object if it is at version `expected`; raises `Conflict` otherwise."""
    if self.read()[1] != expected:
      raise Conflict()
    os.unlink(self.path)


class GcsStore:
  """The object on GCS; every change is conditional on the generation read.

  Args:
    path: gs://BUCKET/name.
    retry_deadline_s: seconds of retries for transient GCS errors on one request.
  """

  def __init__(self, path: str, retry_deadline_s: float):
    self.bucket_name, self.name = versions.split_gcs(path)
    self.retry_deadline_s = retry_deadline_s

  def atomic(self):
    return contextlib.nullcontext()  # generation preconditions make each request atomic

  def read(self) -> tuple[Optional[dict], Optional[int]]:
    """The record and its version (its generation), or (None, None)."""
    api = gcs.exceptions()
    while True:
      with self._errors("read"):
        blob = self._bucket().get_blob(self.name, **self._request())
        if blob is None:
          return None, None
        generation = blob.generation  # a download may reset it from its response headers
        try:
          # Pinned to the generation read, so the record and its generation belong together.
          data = blob.download_as_bytes(if_generation_match=generation, **self._request())
        except (api.PreconditionFailed, api.NotFound):
          continue  # replaced or deleted between the two requests: read again
      return _parse(data), generation

  def write(self, data: bytes, expected: Optional[int]) -> int:
    """Creates the object (expected None) or replaces generation `expected`; returns the new one.

    Raises:
      Conflict: the object exists (expected None) or is no longer at generation `expected`.
    """
    blob = self._bucket().blob(self.name)
    with self._errors("write"):
      # ifGenerationMatch=0: create-only.
      blob.upload_from_string(data, content_type="application/json",
                              if_generation_match=expected or 0, **self._request())
    return blob.generation

  def delete(self, expected: int) -> None:
    """Deletes the object if it is at generation `expected`; raises `Conflict` otherwise."""
    with self._errors("delete"):
      self._bucket().blob(self.name).delete(if_generation_match=expected, **self._request())

  def _bucket(self):
    return gcs.client().bucket(self.bucket_name)

  def _request(self) -> dict:
    """Retry (transient errors, for retry_deadline_s) and timeout arguments of one GCS call."""
    return gcs.call_options(self.retry_deadline_s)

  @contextlib.contextmanager
  def _errors(self, what: str):
    """412 → Conflict; missing bucket or permission → StorageError; outages → TransientError."""
    api = gcs.exceptions()
    import google.auth.exceptions  # pylint: disable=import-outside-toplevel
    import requests  # pylint: disable=import-outside-toplevel
    where = f"cannot {what} the job-dir lock gs://{self.bucket_name}/{self.name}"
    try:
      yield
    except (api.PreconditionFailed, api.NotFound) as e:
      if isinstance(e, api.PreconditionFailed) or what == "delete":
        raise Conflict() from e  # a delete's 404: the object is gone, so no longer ours
      raise errors.StorageError(f"{where}: bucket gs://{self.bucket_name} does not exist: "
                                "create it or fix --job-dir.") from e
    except api.Forbidden as e:
      raise errors.StorageError(
          f"{where}: permission denied on bucket gs://{self.bucket_name} (needs "
          "storage.objects.create, get and delete, e.g. roles/storage.objectUser): grant it "
          "to the training's service account.") from e
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError,
            google.auth.exceptions.TransportError, api.RetryError, api.ServerError,
            api.TooManyRequests) as e:
      first_line = (str(e).strip() or "no details").splitlines()[0]
      raise errors.TransientError(f"{where}: GCS failed ({type(e).__name__}: {first_line}).") from e
