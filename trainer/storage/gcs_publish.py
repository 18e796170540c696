"""Google Cloud Storage: publishing exports for TF Serving, and sweeping leftovers.

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
version that already has objects, and every upload and copy carries
`if_generation_match=0`, so GCS itself rejects a write onto an existing object
if another publisher races us. Every object a publish writes carries its
publish id in the custom metadata `trainer-publish-id`. A 412 on a copy then
tells two cases apart: the destination has our id and the source's crc32c (our
own copy, whose response was lost and which the client retried), or it is
another publisher's object, which is left alone while the publish fails.

If anything fails, every object written under `<version>/` is deleted,
`saved_model.pb` first (so the version stops being loadable before its
variables go), then the staging prefix, and the error is re-raised. A delete
that fails makes the publish raise `errors.CleanupError` naming every object
left behind.

A process killed outright can leave a `.staging-*` prefix, or a `<version>/`
without `saved_model.pb` (which TF Serving cannot load). `sweep`, run before a
version number is chosen, deletes both once they are stale or when their run
info shows they are the current job's own (see `versions.sweep_reason`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Iterator, Optional

from trainer import errors
from trainer.storage import gcs
from trainer.storage import versions

log = logging.getLogger(__name__)

SAVED_MODEL_PB = versions.SAVED_MODEL_PB
# Custom metadata key on every object a publish writes; its value is the
# publish's id, a uuid4 hex.
PUBLISH_ID_KEY = "trainer-publish-id"


def sweep(base: str, job_dir: Optional[str] = None,
          stale_s: float = versions.STALE_S) -> list[str]:
  """Deletes dead publishers' leftovers under `base`: staging prefixes and incomplete versions.

  An incomplete version is an integer prefix without saved_model.pb. What may
  be deleted is decided by `versions.sweep_reason`; each deletion is logged.
  Reads one listing of every object under `base` (a few objects per version)
  plus the run info of each candidate young enough to need it.

  Args:
    base: the model's base path, gs://BUCKET/models/<name>.
    job_dir: the current export's job directory; leftovers naming it are ours.
    stale_s: seconds after which a leftover is stale whoever wrote it.

  Returns:
    The gs:// paths of the prefixes deleted.

  Raises:
    StorageError, TransientError: as `list_versions`. A delete that fails is
      logged as an error and does not stop the export: without its
      saved_model.pb nothing left can be loaded.
  """
  bucket_name, prefix = versions.split_gcs(base)
  root = prefix + "/" if prefix else ""
  with gcs.classified(f"sweeping {base}", bucket_name,
                   "storage.objects.list, storage.objects.get and storage.objects.delete"):
    groups: dict[str, dict] = {}
    for blob in gcs.client().list_blobs(bucket_name, prefix=root, **gcs.call_options()):
      top, sep, rest = blob.name[len(root):].partition("/")
      if sep and (versions.is_version_name(top) or versions.is_staging_name(top)):
        groups.setdefault(top, {})[rest] = blob
    removed, now = [], time.time()
    for top, blobs in sorted(groups.items()):
      if versions.is_version_name(top) and SAVED_MODEL_PB in blobs:
        continue  # complete
      path = f"gs://{bucket_name}/{root}{top}"
      age_s = now - max(b.updated.timestamp() for b in blobs.values())
      run_info = blobs.get(versions.RUN_INFO_PATH)
      recorded = (_recorded_job_dir(run_info) if run_info is not None and age_s <= stale_s
                  else None)
      reason = versions.sweep_reason(age_s, recorded, job_dir, stale_s)
      if reason is None:
        log.info("Leaving %s alone: written %.0f s ago by another publisher, who may still "
                 "be copying it.", path, age_s)
        continue
      log.warning("Sweeping %s (%d objects): %s.", path, len(blobs), reason)
      left = _delete_all(bucket_name, list(blobs.values()))
      if left:
        log.error("Sweeping %s left %d objects behind: %s", path, len(left), ", ".join(left))
      removed.append(path)
  return removed


def _recorded_job_dir(blob) -> Optional[str]:
  """The `job_dir` in a run-info object, None if it is gone or unreadable."""
  api = gcs.exceptions()
  try:
    text = blob.download_as_bytes(**gcs.call_options())
    return json.loads(text).get("job_dir")
  except (api.NotFound, ValueError, AttributeError):
    return None


def publish_version(src_dir: str, base: str, version: int) -> str:
  """Publishes a local SavedModel directory as `base/<version>/` (see the module docstring).

  Args:
    src_dir: local directory holding saved_model.pb, variables/ and the rest.
    base: the model's base path, gs://BUCKET/models/<name>.
    version: the version to create; it must have no objects yet.

  Returns:
    The version's path, gs://BUCKET/models/<name>/<version>.

  Raises:
    FileExistsError: the version already has objects, or another publisher
      wrote one of its objects meanwhile (nothing of theirs is deleted).
    ValueError: `src_dir` holds no saved_model.pb.
    StorageError, TransientError: classified GCS failures, after everything
      written was deleted.
    CleanupError: the publish failed and some of what it wrote could not be
      deleted; chained to the failure.
  """
  bucket_name, prefix = versions.split_gcs(base)
  with gcs.classified(f"publishing version {version} to {base}", bucket_name,
                   "storage.objects.create, .get, .list and .delete, e.g. "
                   "roles/storage.objectUser"):
    return _publish(src_dir, bucket_name, prefix, version)


def _publish(src_dir: str, bucket_name: str, prefix: str, version: int) -> str:
  final = gcs.object_name(prefix, str(version))
  if any(True for _ in gcs.client().list_blobs(bucket_name, prefix=final + "/", max_results=1,
                                               **gcs.call_options())):
    raise FileExistsError(
        f"version {version} already exists at gs://{bucket_name}/{final}/; not overwriting it")
  publish_id = uuid.uuid4().hex
  staging = gcs.object_name(prefix, f"{versions.STAGING_PREFIX}{version}-{publish_id[:8]}")
  return _stage_and_copy(src_dir, bucket_name, staging, final, publish_id, f"version {version}")


def replace_dir(src_dir: str, uri: str) -> str:
  """Replaces whatever is under `uri` with a local SavedModel directory, saved_model.pb last.

  For Vertex AI's AIP_MODEL_DIR, which model import reads at its root: a
  retried job finds the previous attempt's export there. Its saved_model.pb
  is deleted first and then the rest, so no moment shows a saved_model.pb
  beside variables of another export; the new files are staged beside the
  prefix (`<parent>/.staging-<name>-<id>/`, outside what model import reads)
  and copied in with saved_model.pb last, as `publish_version` does.

  Args:
    src_dir: local directory holding saved_model.pb, variables/ and the rest.
    uri: gs://BUCKET/PATH; its parent holds the staging prefix.

  Returns:
    `uri` without a trailing '/'.

  Raises:
    StorageError, TransientError: classified GCS failures, after everything
      written was deleted (the prefix is then empty).
    CleanupError: an old or new object could not be deleted.
  """
  bucket_name, prefix = versions.split_gcs(uri)
  with gcs.classified(f"writing the SavedModel to {uri}", bucket_name,
                      "storage.objects.create, .get, .list and .delete, e.g. "
                      "roles/storage.objectUser"):
    old = list(gcs.client().list_blobs(bucket_name, prefix=prefix + "/", **gcs.call_options()))
    if old:
      log.info("Replacing the %d objects under %s (saved_model.pb first).", len(old), uri)
    left = _delete_all(bucket_name, old)
    if left:
      raise errors.CleanupError(
          f"could not delete the previous SavedModel under {uri}: {', '.join(left)}. Delete "
          "them by hand and rerun.")
    parent, _, name = prefix.rpartition("/")
    publish_id = uuid.uuid4().hex
    staging = gcs.object_name(parent, f"{versions.STAGING_PREFIX}{name}-{publish_id[:8]}")
    return _stage_and_copy(src_dir, bucket_name, staging, prefix, publish_id, uri)


def _stage_and_copy(src_dir: str, bucket_name: str, staging: str, final: str, publish_id: str,
                    what: str) -> str:
  """Uploads `src_dir` under `staging`, copies it to `final` (saved_model.pb last), cleans up.

  `final` must hold no objects. `what` names the destination in messages
  ("version 3", a URI).
  """
  bucket = gcs.client().bucket(bucket_name)
  files = sorted(_relative_files(src_dir))
  if SAVED_MODEL_PB not in files:
    raise ValueError(f"{src_dir} is not a SavedModel directory: it has no {SAVED_MODEL_PB}")
  # The run info first, so a sweep can tell whose leftover a half-copied
  # prefix is; saved_model.pb last: see the module docstring.
  first = [versions.RUN_INFO_PATH] if versions.RUN_INFO_PATH in files else []
  files = first + [f for f in files if f not in first and f != SAVED_MODEL_PB] + [SAVED_MODEL_PB]

  written: list = []  # destination blobs a copy request was sent for
  try:
    crc32c = {}
    for name in files:
      blob = bucket.blob(f"{staging}/{name}")
      blob.metadata = {PUBLISH_ID_KEY: publish_id}
      try:
        blob.upload_from_filename(os.path.join(src_dir, name), if_generation_match=0,
                                  **gcs.call_options())
      except gcs.exceptions().PreconditionFailed:
        # The staging name is ours alone: a 412 means our own upload, retried
        # after its response was lost, unless the checks below say otherwise.
        if not _is_ours(blob, publish_id, None):
          raise
      crc32c[name] = blob.crc32c
    for name in files:
      dst = bucket.blob(f"{final}/{name}")
      # Recorded before the request: one that fails after the server acted
      # still leaves an object to delete.
      written.append(dst)
      if not _copy(bucket.blob(f"{staging}/{name}"), dst, publish_id, crc32c[name]):
        written.pop()  # the object is another publisher's: leave it alone
        raise FileExistsError(
            f"{what}: gs://{bucket_name}/{dst.name} was written by another publisher "
            "while this one was copying; not overwriting it (publish again: the next version "
            "number is free).")
  except BaseException as e:
    log.warning("Publishing %s to gs://%s/%s failed (%s); deleting what was written.",
                what, bucket_name, final, type(e).__name__)
    left = _delete_all(bucket_name, written, then_prefix=staging + "/")
    if left:
      raise errors.CleanupError(
          f"publishing {what} to gs://{bucket_name}/{final} failed "
          f"({type(e).__name__}: {gcs.first_line(e)}) and cleaning up left {len(left)} "
          f"object(s) behind: {', '.join(left)}. Delete them by hand; the next export's "
          "sweep also deletes them once they are stale.") from e
    raise
  left = _delete_all(bucket_name, [], then_prefix=staging + "/")
  if left:  # the destination is complete; the staging leftover is swept later
    log.error("%s is published, but its staging objects remain: %s", what, ", ".join(left))
  return f"gs://{bucket_name}/{final}"


def _copy(src, dst, publish_id: str, crc32c: Optional[str]) -> bool:
  """Server-side copy of blob `src` to `dst`, create-only.

  `rewrite` rather than `copy_blob`: it works for objects of any size and
  across storage classes, continuing with a token until done.

  Returns:
    True once `dst` holds this publish's copy; False if `dst` is another
    publisher's object (it existed, with another publish id or checksum).
  """
  dst.metadata = {PUBLISH_ID_KEY: publish_id}
  token: Optional[str] = None
  try:
    while True:
      token, _, _ = dst.rewrite(src, token=token, if_generation_match=0, **gcs.call_options())
      if token is None:
        return True
  except gcs.exceptions().PreconditionFailed:
    if _is_ours(dst, publish_id, crc32c):
      # Our own copy: it took effect, its response was lost and the client's
      # retry met the object it had created.
      log.info("gs://%s/%s already holds this publish's copy (a retried request); "
               "continuing.", dst.bucket.name, dst.name)
      return True
    return False


def _is_ours(blob, publish_id: str, crc32c: Optional[str]) -> bool:
  """Whether `blob` carries our publish id and, if given, the checksum of our source."""
  try:
    blob.reload(**gcs.call_options())
  except gcs.exceptions().NotFound:
    return False
  return ((blob.metadata or {}).get(PUBLISH_ID_KEY) == publish_id and
          (crc32c is None or blob.crc32c == crc32c))


def _delete_all(bucket_name: str, blobs: list, then_prefix: Optional[str] = None) -> list[str]:
  """Deletes `blobs` (saved_model.pb first), then every object under `then_prefix`.

  Every delete is tried even after one fails: cleanup must remove all it can.
  A missing object is already the goal.

  Returns:
    "gs://bucket/name (reason)" for each object that could not be deleted.
  """
  api = gcs.exceptions()
  # The pb first: a version without it stops being loadable before its
  # variables disappear.
  ordered = sorted(blobs, key=lambda b: b.name.rsplit("/", 1)[-1] != SAVED_MODEL_PB)
  left = []
  if then_prefix is not None:
    try:
      ordered += list(gcs.client().list_blobs(bucket_name, prefix=then_prefix,
                                              **gcs.call_options()))
    except Exception as e:  # pylint: disable=broad-except
      left.append(f"gs://{bucket_name}/{then_prefix}* (could not list it: {gcs.first_line(e)})")
  for blob in ordered:
    try:
      blob.delete(**gcs.call_options())
    except api.NotFound:
      pass
    except Exception as e:  # pylint: disable=broad-except
      log.error("Could not delete gs://%s/%s: %s", bucket_name, blob.name, gcs.first_line(e))
      left.append(f"gs://{bucket_name}/{blob.name} ({type(e).__name__})")
  return left


def _relative_files(root: str) -> Iterator[str]:
  """Paths of the files under `root`, relative to it, with '/' separators."""
  for dirpath, _, filenames in os.walk(root):
    for filename in filenames:
      yield os.path.relpath(os.path.join(dirpath, filename), root).replace(os.sep, "/")

