"""The local back end of trainer/storage/api.py: a directory on this machine's file system.

Each function here has a namesake in the GCS back end (trainer/storage/gcs.py
and gcs_publish.py) with the same arguments and promise; the interface picks
one by the path. Atomicity comes from rename: within one file system it is
atomic, so a reader (TF Serving polling a model's base path, a rerun reading
metrics.json) sees all or nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from typing import Optional

from trainer import errors
from trainer.storage import versions

log = logging.getLogger(__name__)


def join(*parts: str) -> str:
  return os.path.join(*parts)


def ensure_writable_dir(path: str, what: str) -> None:
  """Creates `path` if needed and writes and deletes a probe file in it.

  Raises:
    StorageError: it cannot be created or written; the message names `what`.
  """
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


def write_text(path: str, text: str) -> None:
  """Writes a temporary sibling, then renames it over `path`."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def list_versions(base: str) -> list[int]:
  if not os.path.isdir(base):
    return []
  return sorted(int(n) for n in os.listdir(base)
                if versions.is_version_name(n) and os.path.isdir(os.path.join(base, n)))


def publish_version(src_dir: str, base: str, version: int) -> str:
  """Copies into a hidden staging directory beside the version, then renames it into place."""
  os.makedirs(base, exist_ok=True)
  final = os.path.join(base, str(version))
  if os.path.exists(final):
    raise FileExistsError(f"version {version} already exists at {final}; not overwriting it")
  staging = os.path.join(base, f"{versions.STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
  try:
    shutil.copytree(src_dir, staging)
    # os.rename fails rather than replaces if `final` appeared meanwhile.
    os.rename(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def replace_dir(src_dir: str, dest: str) -> str:
  """Copies into a hidden sibling, moves the old directory aside, renames the copy into place.

  In between, `dest` does not exist, which Vertex AI's model import reports,
  rather than loading a graph beside another export's variables.
  """
  dest = dest.rstrip(os.sep)
  parent, name = os.path.split(os.path.abspath(dest))
  os.makedirs(parent, exist_ok=True)
  tag = uuid.uuid4().hex[:8]
  staging = os.path.join(parent, f"{versions.STAGING_PREFIX}{name}-{tag}")
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


def sweep(base: str, job_dir: Optional[str] = None,
          stale_s: float = versions.STALE_S) -> list[str]:
  """Deletes staging and incomplete version directories that `versions.sweep_reason` allows."""
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
