"""TensorBoard's HParams tab: each run's configuration beside its final metrics.

The chief writes one HParams session per job directory: JOB_DIR/logs holds
the experiment's definition (the hyperparameters and metrics below) and the
session's values. The plugin reads a metric (tag, group) as the last value of
scalar `tag` in the run JOB_DIR/logs/<group>, so the metrics are the scalars
that trainer/telemetry/summaries.py already writes to logs/train and logs/eval: the
final evaluation's loss and accuracy, the last logged training loss, accuracy
and images/s. `tensorboard --logdir runs/` over several job directories then
compares them in one table.

Every run writes the same definition, whatever its values (domains come from
the config's choices, not from this run), because TensorBoard takes the
experiment from whichever session it finds first.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Union

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from trainer.storage import jobdir
from trainer.telemetry import records
from trainer.config import TrainConfig

Value = Union[bool, int, float, str]

# What tells presets apart and changes the result; everything else in
# config.json (paths, logging, retries) does not belong in the comparison.
CONFIG_HPARAMS = ("dataset", "model", "optimizer", "momentum", "epochs", "batch_size",
                  "learning_rate", "lr_schedule", "warmup_epochs", "label_smoothing",
                  "weight_decay", "augment", "pixel_range", "mixed_precision")
# Resolved at run time, from the config and the cluster (config.json's "resolved").
RESOLVED = {
    "effective_learning_rate": "Peak learning rate after --lr-scaling to the global batch.",
    "xla": "Whether the training step was compiled with XLA (--jit-compile, resolved).",
    "compute_precision": "float32, bfloat16 or float16: --mixed-precision resolved for the machine.",
    "workers": "Worker processes that trained.",
    "replicas": "Replicas in sync over all workers (GPUs, or one per CPU worker).",
}

# (group, tag, display name, dataset type): scalars trainer/telemetry/summaries.py writes.
_METRICS = (
    ("eval", "accuracy", "eval accuracy (final)", hp.Metric.VALIDATION),
    ("eval", "loss", "eval loss (final)", hp.Metric.VALIDATION),
    ("train", "accuracy", "train accuracy (last logged)", hp.Metric.TRAINING),
    ("train", "loss", "train loss (last logged)", hp.Metric.TRAINING),
    ("train", "images_per_sec", "train images/s (last logged)", hp.Metric.TRAINING),
)


def _domain(field: dataclasses.Field) -> hp.Domain | None:
  if field.type in (bool, "bool"):
    return hp.Discrete([False, True])
  if "choices" in field.metadata:
    return hp.Discrete(list(field.metadata["choices"]))
  return None  # free numbers and names: any value


def definitions() -> tuple[list[hp.HParam], list[hp.Metric]]:
  """The experiment: hyperparameters and metrics, identical for every run."""
  fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
  hparams = [hp.HParam(name, _domain(fields[name]), description=fields[name].metadata["help"])
             for name in CONFIG_HPARAMS]
  hparams += [hp.HParam(name, description=text) for name, text in RESOLVED.items()]
  metrics = [hp.Metric(tag, group=group, display_name=name, dataset_type=kind)
             for group, tag, name, kind in _METRICS]
  return hparams, metrics


def values(config: TrainConfig, cluster: records.TrainedBy, xla: bool,
           compute_precision: str = "float32") -> dict[str, Value]:
  """This run's hyperparameter values, by name."""
  result: dict[str, Value] = {name: getattr(config, name) for name in CONFIG_HPARAMS}
  result.update(effective_learning_rate=config.effective_learning_rate(), xla=xla,
                compute_precision=compute_precision,
                workers=cluster.workers, replicas=cluster.replicas)
  return result


def write(paths: jobdir.Paths, config: TrainConfig, cluster: records.TrainedBy, xla: bool,
          compute_precision: str = "float32") -> None:
  """Writes the experiment and this run's session into JOB_DIR/logs (call on the chief).

  A resumed run replaces what an earlier attempt wrote there, so the job
  directory stays one session, with the values config.json holds (a rerun
  may change flags, e.g. more --epochs). TensorBoard keeps the first values
  it read for a run, so one that was already open shows the change only
  after a restart. The session's trial id, which the HParams table shows, is
  the job directory; sessions with one trial id would be averaged as one.
  """
  hparams, metrics = definitions()
  # Only this module writes event files directly in JOB_DIR/logs (glob does
  # not descend into logs/train and logs/eval). tf.io.gfile, like the
  # summary writers, works on local paths and gs://.
  for old in tf.io.gfile.glob(f"{paths.logs_root}/events.out.tfevents.*"):
    tf.io.gfile.remove(old)
  writer = tf.summary.create_file_writer(paths.logs_root)
  with writer.as_default():
    hp.hparams_config(hparams=hparams, metrics=metrics)
    hp.hparams(values(config, cluster, xla, compute_precision), trial_id=paths.job_dir,
               start_time_secs=int(time.time()))
  writer.close()
