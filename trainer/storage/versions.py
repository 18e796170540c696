"""Conventions every storage back end shares: version names, staging, staleness, provenance.

A model's base path holds one "directory" per version, named by an integer,
which TF Serving loads once its `saved_model.pb` is there, and the hidden
staging directories publishers copy through. `trainer.storage.api` (the interface)
and `trainer.storage.gcs` (an implementation below it) both import these rules from
here, so neither needs the other's and the import graph has no cycle.
"""

from __future__ import annotations

import re
from typing import Optional

from trainer import errors

# Prefix of staging directories next to version directories. TF Serving only
# loads directories whose names are integers, so it never looks at these.
STAGING_PREFIX = ".staging-"
# The file TF Serving checks to decide that a version is loadable. A version
# directory without it is incomplete: a publisher is copying it, or died doing so.
SAVED_MODEL_PB = "saved_model.pb"
# Provenance of a SavedModel, relative to its directory (written by
# export.write_saved_model). Its `job_dir` tells a sweep whose leftover a
# staging or incomplete version directory is; it is copied before saved_model.pb.
RUN_INFO_FILE = "trainer_run.json"
RUN_INFO_PATH = f"assets.extra/{RUN_INFO_FILE}"
# Seconds after its last write at which a staging or incomplete version
# directory counts as a dead publisher's leftover. A live publisher writes
# every few seconds; one hour leaves room for a slow upload of a large model.
STALE_S = 3600.0

_VERSION_RE = re.compile(r"^\d+$")


def is_version_name(name: str) -> bool:
  """Whether `name` is a version directory's name (TF Serving's rule: an integer)."""
  return bool(_VERSION_RE.match(name))


def is_staging_name(name: str) -> bool:
  return name.startswith(STAGING_PREFIX)


def is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
  """Splits gs://bucket/some/prefix into ('bucket', 'some/prefix').

  Raises:
    ValueError: `uri` is not a gs:// URI.
    StorageError: it names no bucket.
  """
  if not is_gcs(uri):
    raise ValueError(f"not a gs:// URI: {uri}")
  bucket, _, prefix = uri[len("gs://"):].partition("/")
  if not bucket:
    raise errors.StorageError(f"{uri!r} names no bucket: use gs://BUCKET/path.")
  return bucket, prefix.strip("/")


def sweep_reason(age_s: float, recorded_job_dir: Optional[str], job_dir: Optional[str],
                 stale_s: float) -> Optional[str]:
  """Why a staging or incomplete version directory may be deleted, or None to keep it.

  Deleting a directory another publisher is still writing would break its
  publish, so only two kinds are deleted:

  * stale ones, written to last more than `stale_s` ago: their publisher died;
  * this job's own, whose run info names `job_dir`: the job directory's lock
    (held by the chief) means nobody else from this job publishes now, so a
    leftover of this job is a previous attempt's, however young.

  Args:
    age_s: seconds since the directory's newest file was written.
    recorded_job_dir: the `job_dir` in its run info, None if it has none (yet).
    job_dir: the job directory of the current export, None if unknown.
    stale_s: the staleness threshold in seconds (`STALE_S` outside tests).
  """
  if age_s > stale_s:
    return f"stale: last written {age_s:.0f} s ago (threshold {stale_s:.0f} s)"
  if job_dir and recorded_job_dir == job_dir:
    return f"left by an earlier attempt of this job ({job_dir})"
  return None
