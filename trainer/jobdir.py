"""The job directory's layout (README documents it), and what a finished job must still hold.

  JOB_DIR/config.json          the resolved configuration (chief)
  JOB_DIR/metrics.json         final metrics and where the export went (chief, last)
  JOB_DIR/checkpoints/         tf.train.CheckpointManager's files
  JOB_DIR/logs/                the HParams session: this run's configuration (trainer/hparams.py)
  JOB_DIR/logs/{train,eval}/   TensorBoard event files
  JOB_DIR/logs/train/plugins/profile/<time>/   --profile-steps traces (trainer/profiling.py)
  JOB_DIR/export/<model>/<N>/  SavedModel versions
  JOB_DIR/lock.json            the running chief's lease (trainer/joblock.py)

Only the chief writes here. Non-chief workers read the checkpoints, nothing else.
"""

from __future__ import annotations

import dataclasses

from trainer import storage
from trainer import versions

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
EXPORT_DIR = "export"


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where things go in one job directory."""
  job_dir: str

  @property
  def config(self) -> str:
    return storage.join(self.job_dir, CONFIG_FILE)

  @property
  def metrics(self) -> str:
    return storage.join(self.job_dir, METRICS_FILE)

  @property
  def checkpoints(self) -> str:
    return storage.join(self.job_dir, CHECKPOINT_DIR)

  @property
  def logs_root(self) -> str:
    """The TensorBoard run that holds the HParams session; its subruns are `logs(run)`."""
    return storage.join(self.job_dir, LOG_DIR)

  def logs(self, run: str) -> str:
    return storage.join(self.job_dir, LOG_DIR, run)

  def export_base(self, model_name: str) -> str:
    return storage.join(self.job_dir, EXPORT_DIR, model_name)


def missing_exports(metrics: dict, bases: list[str]) -> list[str]:
  """What a finished job's export lacks, as version paths: [] when all is in place.

  Args:
    metrics: metrics.json of the finished run, with `export.version` and
      `export.paths`.
    bases: the model base paths the current flags ask for (the job's own
      export/<model> and, with --publish-dir, PUBLISH_DIR/<model>). A new
      --publish-dir or --model-name shows up here as a base with no version.
  """
  version = str(metrics["export"]["version"])
  wanted = [storage.join(base, version) for base in bases]
  recorded = set(metrics["export"]["paths"])
  return [path for path in wanted
          if path not in recorded or not storage.exists(storage.join(path, versions.SAVED_MODEL_PB))]
