"""Storage: local paths and gs:// through one interface.

TensorFlow's own file system (`tf.io.gfile`) handles checkpoints, TensorBoard
and reads on both local paths and gs://. This module adds what it lacks:

* a writability check that fails before training, naming the path (and, for
  GCS, the bucket and the missing permission);
* publishing a SavedModel version so that TF Serving, which polls the model's
  base path, never sees a partially written version (`publish_version`);
* a sweep of dead publishers' leftovers before a version number is chosen
  (`sweep`);
* replacing a SavedModel directory in place, for Vertex AI's AIP_MODEL_DIR
  (`replace_dir`);
* atomic small-file writes (config.json, metrics.json).

This module is the interface callers use. GCS work that needs more than gfile
(preflight, ordered publishing, sweeping) is implemented below it in
`trainer.gcs` and `trainer.gcs_publish`, through `google-cloud-storage`, which
honours STORAGE_EMULATOR_HOST and so can be tested against a real emulator
(tests/test_gcs.py). Neither imports this module; the conventions all back
ends share live in `trainer.versions`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from typing import Any, Optional

import tensorflow as tf

from trainer import errors
from trainer import gcs
from trainer import gcs_publish
from trainer import versions

log = logging.getLogger(__name__)

# Shared conventions, re-exported for callers of this interface.
STAGING_PREFIX = versions.STAGING_PREFIX
STALE_STAGING_S = versions.STALE_S
is_gcs = versions.is_gcs
split_gcs = versions.split_gcs


def join(*parts: str) -> str:
  """Joins path parts with '/' for gs:// and os.path.join locally."""
  if is_gcs(parts[0]):
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))
  return os.path.join(*parts)


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
  """Version numbers (integer directory names) under a model's base path.

  Incomplete versions (no saved_model.pb yet) count: their numbers are taken.
  """
  if is_gcs(base):
    return gcs.list_versions(base)
  if not os.path.isdir(base):
    return []
  return sorted(int(n) for n in os.listdir(base)
                if versions.is_version_name(n) and os.path.isdir(os.path.join(base, n)))


def next_version(bases: list[str]) -> int:
  """One more than the highest version under any of `bases`, so versions only grow."""
  return max([0] + [v for b in bases for v in list_versions(b)]) + 1


def publish_version(src_dir: str, base: str, version: int) -> str:
  """Copies a finished SavedModel directory to `base/<version>/` safely.

  TF Serving polls `base` and loads any integer-named directory it finds, so
  the version must appear complete or not at all:

  * Local: copy into a hidden staging directory beside it, then rename. A
    rename within one file system is atomic, so a watcher sees all or nothing.
  * gs://: see `gcs_publish.publish_version` (staging prefix, then
    saved_model.pb last).

  Leftovers of publishers killed mid-copy are removed by `sweep`, which
  callers run before choosing `version`.

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
    return gcs_publish.publish_version(src_dir, base, version)
  os.makedirs(base, exist_ok=True)
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


def replace_dir(src_dir: str, dest: str) -> str:
  """Makes `dest` hold exactly the SavedModel in local `src_dir`, never a mix of two exports.

  For Vertex AI's AIP_MODEL_DIR, which model import reads at its root after
  the job, and which a retried job finds holding the previous attempt's export:

  * Local: copy into a hidden sibling, move the old directory aside, rename
    the copy into place, delete the old one. In between, `dest` does not
    exist, which model import reports, rather than loading a graph beside
    another export's variables.
  * gs://: see `gcs_publish.replace_prefix` (the old saved_model.pb deleted
    first, the new one copied last).

  Returns:
    `dest` without a trailing '/'.
  """
  if is_gcs(dest):
    return gcs_publish.replace_prefix(src_dir, dest)
  dest = dest.rstrip(os.sep)
  parent, name = os.path.split(os.path.abspath(dest))
  os.makedirs(parent, exist_ok=True)
  tag = uuid.uuid4().hex[:8]
  staging = os.path.join(parent, f"{STAGING_PREFIX}{name}-{tag}")
  old = os.path.join(parent, f".old-{name}-{tag}")
  aside = False
  try:
    shutil.copytree(src_dir, staging)
    if os.path.lexists(dest):
      os.rename(dest, old)
      aside = True
    os.rename(staging, dest)
  except BaseException:
    if aside and not os.path.lexists(dest):
      os.rename(old, dest)  # the previous export, whole, rather than none
    raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
  return dest


def exists(path: str) -> bool:
  return tf.io.gfile.exists(path)


def sweep(base: str, job_dir: Optional[str] = None,
          stale_s: float = versions.STALE_S) -> list[str]:
  """Deletes dead publishers' leftovers under a model's base path; logs each.

  Leftovers are staging directories and incomplete versions (integer
  directories without saved_model.pb). Only stale ones, or this job's own,
  are deleted: see `versions.sweep_reason`. Run it before choosing a version
  number, so a number a killed publish held is free again.

  Args:
    base: the model's base path, local or gs://.
    job_dir: the current export's job directory, compared with the `job_dir`
      in each leftover's assets.extra/trainer_run.json.
    stale_s: seconds after its last write at which any leftover is stale.

  Returns:
    The paths deleted.
  """
  if is_gcs(base):
    return gcs_publish.sweep(base, job_dir, stale_s)
  if not os.path.isdir(base):
    return []
  removed = []
  for name in sorted(os.listdir(base)):
    path = os.path.join(base, name)
    if not os.path.isdir(path) or not (versions.is_staging_name(name) or
                                       versions.is_version_name(name)):
      continue
    if (versions.is_version_name(name) and
        os.path.exists(os.path.join(path, versions.SAVED_MODEL_PB))):
      continue  # complete
    age_s = time.time() - _newest_mtime(path)
    reason = versions.sweep_reason(age_s, _recorded_job_dir(path), job_dir, stale_s)
    if reason is None:
      log.info("Leaving %s alone: written %.0f s ago by another publisher, who may still be "
               "copying it.", path, age_s)
      continue
    log.warning("Sweeping %s: %s.", path, reason)
    shutil.rmtree(path, onerror=lambda _, p, e: log.error("Could not delete %s: %s", p, e[1]))
    removed.append(path)
  return removed


def _newest_mtime(root: str) -> float:
  """The latest modification time (seconds since the epoch) of `root` or anything under it."""
  newest = os.path.getmtime(root)
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      try:
        newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
      except OSError:
        pass  # deleted meanwhile
  return newest


def _recorded_job_dir(version_dir: str) -> Optional[str]:
  """The `job_dir` in a local leftover's run info, None if it has none or it is unreadable."""
  try:
    with open(os.path.join(version_dir, versions.RUN_INFO_PATH), encoding="utf-8") as f:
      return json.load(f).get("job_dir")
  except (OSError, ValueError, AttributeError):
    return None
