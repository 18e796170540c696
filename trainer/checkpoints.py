"""Checkpoints of a training run: written by every worker, kept by the chief.

A checkpoint holds the model, the optimizer (with its step count) and the
progress (completed epochs, steps into the current one), so a rerun with the
same job dir resumes exactly there. Under MultiWorkerMirroredStrategy every
worker must take part in a save (it reads distributed variables), but only
the chief's lands in the job dir; the others write to a scratch directory
and delete the files at once.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import tensorflow as tf

from trainer import errors

log = logging.getLogger(__name__)


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
    """Restores the latest checkpoint, if any; returns its path or None.

    Raises:
      StorageError: the checkpoint does not fit these objects (a different
        model, dataset or optimizer wrote it).
    """
    latest = tf.train.latest_checkpoint(self.directory)
    if not latest:
      log.info("No checkpoint in %s: starting from scratch.", self.directory)
      return None
    try:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      raise errors.StorageError(
          f"checkpoint {latest} does not match this model and data ({str(e).splitlines()[0]}): "
          "it was written by a different configuration. Use a new --job-dir.") from None
    return latest

  def save(self, global_step: int, scratch_dir: str) -> str:
    """Saves on this worker; returns the path (the chief's in the job dir, else a deleted scratch file)."""
    if self.is_chief:
      if self._manager is None:
        self._manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                   max_to_keep=self.keep)
      return self._manager.save(checkpoint_number=global_step)
    path = self.checkpoint.write(os.path.join(scratch_dir, "ckpt"))
    for name in tf.io.gfile.listdir(scratch_dir):
      tf.io.gfile.remove(os.path.join(scratch_dir, name))
    return path
