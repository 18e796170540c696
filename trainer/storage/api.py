"""Storage: local paths and gs:// through one interface.

TensorFlow's own file system (`tf.io.gfile`) handles checkpoints and TensorBoard
on both local paths and gs://. This module adds what it lacks:

* a writability check that fails before training, naming the path (and, for
  GCS, the bucket and the missing permission);
* publishing a SavedModel version so that TF Serving, which polls the model's
  base path, never sees a partially written version (`publish_version`);
* a sweep of dead publishers' leftovers before a version number is chosen
  (`sweep`);
* replacing a SavedModel directory in place, for Vertex AI's AIP_MODEL_DIR
  (`replace_dir`);
* atomic small-file writes and reads (config.json, metrics.json, models.config for
  serving.rollout) whose gs:// failures name the object and exit as they should
  (142 for an outage, 2 for a permission), not with tf.io.gfile's traceback.

This module is the interface callers use, and it only routes: each operation
is implemented once per back end, by `trainer.storage.local` for local paths
and by `trainer.storage.gcs` / `gcs_publish` for gs:// (through
google-cloud-storage, which honours STORAGE_EMULATOR_HOST and so is tested
against a real emulator, tests/test_gcs.py). No back end imports this
module; the conventions they share live in `trainer.storage.versions`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from trainer.storage import gcs
from trainer.storage import gcs_publish
from trainer.storage import local
from trainer.storage import versions

# Shared conventions, re-exported for callers of this interface.
STAGING_PREFIX = versions.STAGING_PREFIX
STALE_STAGING_S = versions.STALE_S
is_gcs = versions.is_gcs
split_gcs = versions.split_gcs


def join(*parts: str) -> str:
  """Joins path parts with '/' for gs:// and os.path.join locally."""
  return (gcs if is_gcs(parts[0]) else local).join(*parts)


def ensure_writable_dir(path: str, what: str) -> None:
  """Creates `path` if needed and proves it can be written, before any training.

  For gs:// the check goes through google-cloud-storage, so a missing bucket
  or permission is reported by name (see `gcs.ensure_writable_dir`).

  Args:
    path: a local directory or gs:// prefix.
    what: the flag it came from, for the message ("--job-dir").

  Raises:
    StorageError: if the directory cannot be created or written.
    TransientError: GCS could not be reached.
  """
  (gcs if is_gcs(path) else local).ensure_writable_dir(path, what)


def write_json(path: str, obj: Any) -> None:
  """Writes JSON so that a reader sees the old file or the new one, never half.

  Locally: a temporary sibling, then a rename. On GCS an object upload is
  already atomic.
  """
  text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
  (gcs if is_gcs(path) else local).write_text(path, text)


def write_text(path: str, text: str) -> None:
  """Writes a small text file atomically, as write_json does (a reader sees old or new)."""
  (gcs if is_gcs(path) else local).write_text(path, text)


def _gfile():
  """tf.io.gfile, imported on first use.

  Everything else here is plain Python or the google libraries (loaded lazily
  too), so processes that only lock a job dir or publish a copy (the job-dir
  lock's racers, a publisher) import this module without TensorFlow's runtime:
  2.9 s of CPU on a 2-core AMD EPYC. The trainer has it loaded already.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile


def read_text(path: str) -> Optional[str]:
  """Returns the file's text, or None if it does not exist.

  gs:// through google-cloud-storage, whose failures are classified
  (`gcs.read_text`: StorageError, TransientError); local paths through tf.io.gfile.
  """
  if is_gcs(path):
    return gcs.read_text(path)
  gfile = _gfile()
  if not gfile.exists(path):
    return None
  with gfile.GFile(path) as f:
    return f.read()


def read_json(path: str) -> Optional[Any]:
  """Returns the parsed file, or None if it does not exist (read as `read_text` reads).

  Raises:
    ValueError: the file is not JSON (json.JSONDecodeError).
  """
  text = read_text(path)
  return None if text is None else json.loads(text)


def exists(path: str) -> bool:
  """Whether a file (on gs://, an object) exists; gs:// failures as `read_text`'s."""
  return gcs.object_exists(path) if is_gcs(path) else _gfile().exists(path)


def list_versions(base: str) -> list[int]:
  """Version numbers (integer directory names) under a model's base path, sorted.

  Incomplete versions (no saved_model.pb yet) count: their numbers are taken.
  """
  return (gcs if is_gcs(base) else local).list_versions(base)


def next_version(bases: list[str]) -> int:
  """One more than the highest version under any of `bases`, so versions only grow."""
  return max([0] + [v for b in bases for v in list_versions(b)]) + 1


def publish_version(src_dir: str, base: str, version: int) -> str:
  """Copies a finished SavedModel directory to `base/<version>/`, visible whole or not at all.

  TF Serving polls `base` and loads any integer-named directory it finds.
  Locally the copy goes to a hidden staging directory, then one rename; on
  gs:// to a staging prefix, then server-side copies with saved_model.pb
  last (see trainer/storage/gcs_publish.py). Leftovers of publishers killed
  mid-copy are removed by `sweep`, which callers run before choosing `version`.

  Args:
    src_dir: local directory holding saved_model.pb and variables/.
    base: the model's base path (.../export/<model-name>), local or gs://.
    version: the version to create; it must not exist yet.

  Returns:
    The path of the published version.

  Raises:
    FileExistsError: if the version already exists (nothing is overwritten).
  """
  return (gcs_publish if is_gcs(base) else local).publish_version(src_dir, base, version)


def replace_dir(src_dir: str, dest: str) -> str:
  """Makes `dest` hold exactly the SavedModel in local `src_dir`, never a mix of two exports.

  For Vertex AI's AIP_MODEL_DIR, which model import reads at its root after
  the job, and which a retried job finds holding the previous attempt's
  export. Locally the old directory is moved aside and the copy renamed in;
  on gs:// the old saved_model.pb is deleted first and the new one copied last.

  Returns:
    `dest` without a trailing '/'.
  """
  return (gcs_publish if is_gcs(dest) else local).replace_dir(src_dir, dest)


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
  return (gcs_publish if is_gcs(base) else local).sweep(base, job_dir, stale_s)
