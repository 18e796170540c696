"""Storage: local paths and gs:// through one interface.

TensorFlow's own file system (`tf.io.gfile`) handles checkpoints, TensorBoard
and reads on both local paths and gs://. This module adds what it lacks:

* a writability check that fails before training, naming the path (and, for
  GCS, the bucket and the missing permission);
* publishing a SavedModel version so that TF Serving, which polls the model's
  base path, never sees a partially written version (`publish_version`);
* atomic small-file writes (config.json, metrics.json).

GCS work that needs more than gfile (preflight, ordered publishing) goes
through `google-cloud-storage`, which honours STORAGE_EMULATOR_HOST and so can
be tested against a real emulator (tests/test_gcs.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from typing import Any, Optional

import tensorflow as tf

from trainer import errors

log = logging.getLogger(__name__)

# Prefix of staging directories next to version directories. TF Serving only
# loads directories whose names are integers, so it never looks at these.
STAGING_PREFIX = ".staging-"
_VERSION_RE = re.compile(r"^\d+$")
# A staging directory this old (seconds) is a crashed publisher's leftover.
STALE_STAGING_S = 3600


def is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def join(*parts: str) -> str:
  """Joins path parts with '/' for gs:// and os.path.join locally."""
  if is_gcs(parts[0]):
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))
  return os.path.join(*parts)


def split_gcs(uri: str) -> tuple[str, str]:
  """Splits gs://bucket/some/prefix into ('bucket', 'some/prefix')."""
  if not is_gcs(uri):
    raise ValueError(f"not a gs:// URI: {uri}")
  bucket, _, prefix = uri[len("gs://"):].partition("/")
  if not bucket:
    raise errors.StorageError(f"{uri!r} names no bucket: use gs://BUCKET/path.")
  return bucket, prefix.strip("/")


def ensure_writable_dir(path: str, what: str) -> None:
  """Creates `path` if needed and proves it can be written.

  For gs:// the check goes through google-cloud-storage, so a missing bucket
  or permission is reported by name (see `gcs.preflight`).

  Args:
    path: a local directory or gs:// prefix.
    what: the flag it came from, for the message ("--job-dir").

  Raises:
    StorageError: if the directory cannot be created or written.
  """
  if is_gcs(path):
    from trainer import gcs  # pylint: disable=import-outside-toplevel
    gcs.preflight(path, what)
    return
  probe = os.path.join(path, f".write-probe-{uuid.uuid4().hex}")
  try:
    os.makedirs(path, exist_ok=True)
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise errors.StorageError(
        f"{what} {path!r} cannot be written ({e.strerror or e}): choose a "
        "writable directory or fix its permissions.") from e


def write_json(path: str, obj: Any) -> None:
  """Writes JSON so that a reader sees the old file or the new one, never half.

  Locally: write a temporary sibling, then rename. On GCS an object upload is
  already atomic.
  """
  text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
  if is_gcs(path):
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
    return
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path: str) -> Optional[Any]:
  """Returns the parsed file, or None if it does not exist."""
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def list_versions(base: str) -> list[int]:
  """Version numbers (integer directory names) under a model's base path."""
  if is_gcs(base):
    from trainer import gcs  # pylint: disable=import-outside-toplevel
    return gcs.list_versions(base)
  if not os.path.isdir(base):
    return []
  return sorted(int(n) for n in os.listdir(base)
                if _VERSION_RE.match(n) and os.path.isdir(os.path.join(base, n)))


def next_version(bases: list[str]) -> int:
  """One more than the highest version under any of `bases`, so versions only grow."""
  return max([0] + [v for b in bases for v in list_versions(b)]) + 1


def publish_version(src_dir: str, base: str, version: int) -> str:
  """Copies a finished SavedModel directory to `base/<version>/` safely.

  TF Serving polls `base` and loads any integer-named directory it finds, so
  the version must appear complete or not at all:

  * Local: copy into a hidden staging directory beside it, then rename. A
    rename within one file system is atomic, so a watcher sees all or nothing.
  * gs://: see `gcs.publish_version` (staging prefix, then saved_model.pb last).

  Args:
    src_dir: local directory holding saved_model.pb and variables/.
    base: the model's base path (…/export/<model-name>), local or gs://.
    version: the version to create; it must not exist yet.

  Returns:
    The path of the published version.

  Raises:
    FileExistsError: if the version already exists (nothing is overwritten).
  """
  if is_gcs(base):
    from trainer import gcs  # pylint: disable=import-outside-toplevel
    return gcs.publish_version(src_dir, base, version)
  os.makedirs(base, exist_ok=True)
  _remove_stale_staging(base)
  final = os.path.join(base, str(version))
  if os.path.exists(final):
    raise FileExistsError(f"version {version} already exists at {final}; not overwriting it")
  staging = os.path.join(base, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
  try:
    shutil.copytree(src_dir, staging)
    # os.rename fails rather than replaces if `final` appeared meanwhile.
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def _remove_stale_staging(base: str) -> None:
  """Deletes staging directories left by a process that crashed mid-copy.

  Only old ones: a younger one may belong to another publisher copying right now.
  """
  for name in os.listdir(base):
    path = os.path.join(base, name)
    if name.startswith(STAGING_PREFIX) and time.time() - os.path.getmtime(path) > STALE_STAGING_S:
      log.info("Removing stale export staging directory %s", path)
      shutil.rmtree(path, ignore_errors=True)
