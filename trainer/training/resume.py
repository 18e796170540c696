"""Whether this run may resume a checkpoint: what the job recorded against what this run asks.

A checkpoint restores whatever the flags: weights and the step counter have
the same shapes whatever the pixel range, batch size or split. What they
meant is in the job directory's config.json, which the run that wrote the
checkpoint recorded (trainer/telemetry/records.py). A resume that would
silently train something else is refused (exit 2) before anything in the job
directory changes.
"""

from __future__ import annotations

import logging

from trainer import errors
from trainer.config import TrainConfig
from trainer.storage import api as storage
from trainer.training import checkpoints

log = logging.getLogger(__name__)


def check(checkpoint: str, epoch: int, config: TrainConfig, steps_per_epoch: int,
          config_path: str) -> None:
  """Refuses to resume `checkpoint` (`epoch` epochs trained) with this run's `config`.

  Refused: other --pixel-range (the weights would see pixels scaled
  differently); fewer --epochs than trained (a model of more epochs would be
  recorded as one of fewer); and, while epochs remain, another number of
  steps per epoch (--batch-size, --train-split): the learning-rate schedule,
  rebuilt for the new count, would be read at the old step (past its end,
  cosine has decayed to 0), and a mid-epoch position could lie past the new
  epoch's end.

  Raises:
    ConfigError: nothing in the job directory is changed.
  """
  try:
    recorded = storage.read_json(config_path)
  except ValueError as e:  # not JSON: written by hand, or by something else
    log.warning("Could not read %s (%s): resuming without checking --pixel-range.", config_path, e)
    recorded = None
  if isinstance(recorded, dict):
    _check_pixel_range(checkpoint, recorded, config, config_path)
  if epoch > config.epochs:
    raise checkpoints.fewer_epochs_than_trained(checkpoint, epoch, config.epochs)
  if epoch == config.epochs or not isinstance(recorded, dict):
    return  # trained (nothing is scheduled, whatever the batch), or no record to compare with
  resolved = recorded.get("resolved")
  trained = resolved.get("steps_per_epoch") if isinstance(resolved, dict) else None
  if isinstance(trained, int) and trained != steps_per_epoch:
    raise errors.ConfigError(
        f"{checkpoint} was trained at {trained} steps per epoch (--batch-size "
        f"{recorded.get('batch_size')}, --train-split {recorded.get('train_split')!r}, recorded "
        f"in {config_path}), and this run has {steps_per_epoch} (--batch-size "
        f"{config.batch_size}, --train-split {config.train_split!r}): the "
        "learning-rate schedule counts steps. Rerun with the recorded flags to resume, or use "
        "a new --job-dir to train afresh.")


def _check_pixel_range(checkpoint: str, recorded: dict, config: TrainConfig,
                       config_path: str) -> None:
  # The range is the model's first layer, which has no weights: only the record
  # tells. A config.json without the field predates it: its runs trained on [0, 1].
  trained = recorded.get("pixel_range", "unit")
  if trained != config.pixel_range:
    raise errors.ConfigError(
        f"{checkpoint} was trained with --pixel-range {trained} (recorded in "
        f"{config_path}), and this run asks for --pixel-range {config.pixel_range}: "
        f"the weights would see pixels scaled differently. Rerun with --pixel-range {trained} "
        "to resume, or use a new --job-dir to train afresh.")
