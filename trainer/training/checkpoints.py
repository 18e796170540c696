"""Checkpoints of a training run: written by every worker, kept by the chief.

A checkpoint holds the model, the optimizer (with its step count) and the
progress (completed epochs, steps into the current one), so a rerun with the
same job dir resumes exactly there. Under MultiWorkerMirroredStrategy every
worker must take part in a save (it reads distributed variables), but only
the chief's lands in the job dir; the others write to a scratch directory
and delete the files at once.

Failures are classed by what a rerun can do about them:

* a checkpoint of another model or dataset: exit 2 (a rerun cannot help);
* the newest checkpoint incomplete or corrupt (a data file missing, a CRC
  mismatch): restore the one before it, with a warning;
* a write or read that ran out of the file system's retries: exit 142, the
  Job retries the pod.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import tensorflow as tf

from trainer import errors

log = logging.getLogger(__name__)

# The checkpoint key of the completed-epochs counter (the `epoch` object).
_EPOCH_KEY = "epoch/.ATTRIBUTES/VARIABLE_VALUE"
# Read/write errors of the file system itself (GCS out of retries, a network
# blip), as opposed to the content of a checkpoint.
_TRANSIENT = (tf.errors.AbortedError, tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
              tf.errors.ResourceExhaustedError, tf.errors.InternalError, tf.errors.UnknownError)
# The content is broken: a file referenced by the index is gone, or its bytes
# do not match their checksum. The checkpoint reader raises errors it has no
# class for (a missing data file: "No such file or directory") as RuntimeError.
_BROKEN = (tf.errors.NotFoundError, tf.errors.DataLossError, RuntimeError)


@dataclasses.dataclass(frozen=True)
class Progress:
  """How far the newest checkpoint got, read without building the model."""
  path: str
  epochs_done: int


def progress(directory: str) -> Optional[Progress]:
  """The newest checkpoint's completed epochs, or None if there is none or it cannot be read.

  Reads one scalar from the checkpoint files, so it needs neither the model
  nor a distribution strategy: the trainer decides with it, before creating
  the strategy, whether there is anything left to train.
  """
  latest = tf.train.latest_checkpoint(directory)
  if not latest:
    return None
  try:
    return Progress(latest, int(tf.train.load_checkpoint(latest).get_tensor(_EPOCH_KEY)))
  except (tf.errors.OpError, ValueError) as e:
    log.warning("Could not read the progress recorded in %s (%s).", latest, _first_line(e))
    return None


def fewer_epochs_than_trained(path: str, trained: int, asked: int) -> errors.ConfigError:
  """The refusal of a run that asks for fewer --epochs than checkpoint `path` has trained."""
  return errors.ConfigError(
      f"{path} has {trained} epochs trained, and this run asks for --epochs {asked}: pass "
      f"--epochs {trained} (or more, to train on) to resume, or use a new --job-dir to train "
      "afresh.")


class Checkpoints:
  """Restores and saves one `tf.train.Checkpoint` of the run's objects."""

  def __init__(self, directory: str, keep: int, is_chief: bool, **objects: tf.Module):
    """Tracks `objects` for saving into `directory`.

    Args:
      directory: JOB_DIR/checkpoints (local or gs://).
      keep: checkpoints the chief keeps; older ones are deleted.
      is_chief: whether this worker writes into `directory`.
      **objects: what to save, by name (model, optimizer, epoch, epoch_step).
    """
    self.directory = directory
    self.keep = keep
    self.is_chief = is_chief
    self.checkpoint = tf.train.Checkpoint(**objects)
    self._manager: Optional[tf.train.CheckpointManager] = None

  def restore(self) -> Optional[str]:
    """Restores the newest checkpoint that is intact; returns its path or None.

    Raises:
      StorageError: a checkpoint does not fit these objects (a different
        model, dataset or optimizer wrote it), or every checkpoint is broken.
      TransientError: the file system failed while reading.
    """
    state = tf.train.get_checkpoint_state(self.directory)
    candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
    if not candidates:
      log.info("No checkpoint in %s: starting from scratch.", self.directory)
      return None
    broken = []
    for path in candidates:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except _BROKEN as e:
        log.warning("Checkpoint %s is incomplete or corrupt (%s): trying the one before it.",
                    path, _first_line(e))
        broken.append(os.path.basename(path))
        continue
      except _TRANSIENT as e:
        raise errors.TransientError(
            f"reading checkpoint {path} failed ({type(e).__name__}: {_first_line(e)}); "
            "the Job retries the pod.") from e
      except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise errors.StorageError(
            f"checkpoint {path} does not match this model and data ({_first_line(e)}): "
            "it was written by a different configuration. Use a new --job-dir.") from None
      except tf.errors.OpError as e:  # the reader's own errors, e.g. a data file gone
        log.warning("Checkpoint %s cannot be read (%s): trying the one before it.",
                    path, _first_line(e))
        broken.append(os.path.basename(path))
        continue
      if broken:
        log.warning("Resuming from %s: the newer checkpoint(s) %s could not be read.",
                    path, ", ".join(broken))
      return path
    raise errors.StorageError(
        f"every checkpoint in {self.directory} is incomplete or corrupt ({', '.join(broken)}): "
        f"delete {self.directory} to train from scratch, or use a new --job-dir.")

  def save(self, global_step: int, scratch_dir: str) -> str:
    """Saves on this worker; returns the path (the chief's in the job dir, else a deleted scratch file).

    Raises:
      TransientError: the write failed (e.g. GCS out of retries: ABORTED).
        The previous checkpoint is intact, so a rerun resumes from it.
    """
    try:
      if self.is_chief:
        if self._manager is None:
          self._manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                     max_to_keep=self.keep)
        return self._manager.save(checkpoint_number=global_step)
      path = self.checkpoint.write(os.path.join(scratch_dir, "ckpt"))
      for name in tf.io.gfile.listdir(scratch_dir):
        tf.io.gfile.remove(os.path.join(scratch_dir, name))
      return path
    except tf.errors.OpError as e:
      raise errors.TransientError(
          f"saving the checkpoint at global step {global_step} to "
          f"{self.directory if self.is_chief else scratch_dir} failed ({type(e).__name__}: "
          f"{_first_line(e)}); the previous checkpoint is intact and a rerun resumes from it.") from e


def _first_line(e: BaseException) -> str:
  text = getattr(e, "message", None) or str(e)
  return text.strip().splitlines()[0] if text.strip() else type(e).__name__
