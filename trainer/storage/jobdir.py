"""The job directory's layout (README documents it; docs/architecture.md maps the code), and what a finished job must still hold.

  JOB_DIR/config.json          the resolved configuration (chief)
  JOB_DIR/metrics.json         final metrics and where the export went (chief, last)
  JOB_DIR/checkpoints/         tf.train.CheckpointManager's files
  JOB_DIR/logs/                the HParams session: this run's configuration (trainer/telemetry/hparams.py)
  JOB_DIR/logs/{train,eval}/   TensorBoard event files
  JOB_DIR/logs/train/plugins/profile/<time>/   --profile-steps traces (trainer/telemetry/profiling.py)
  JOB_DIR/export/<model>/<N>/  SavedModel versions
  JOB_DIR/lock.json            the running chief's lease (trainer/storage/joblock.py)

Only the chief writes here. Non-chief workers read the checkpoints, nothing else.

On Vertex AI without --job-dir (`for_run`), JOB_DIR is the CustomJob's
baseOutputDirectory (the parent of AIP_MODEL_DIR) and three places move to
where Vertex AI looks for them (trainer/cluster/vertex.py):

  AIP_CHECKPOINT_DIR/              instead of JOB_DIR/checkpoints/
  AIP_TENSORBOARD_LOG_DIR/{,train,eval}/  instead of JOB_DIR/logs/ (HParams, scalars)
  AIP_MODEL_DIR/saved_model.pb ... the latest export again, at the root, for model import
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Protocol

from trainer.storage import api as storage
from trainer.storage import versions

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
EXPORT_DIR = "export"


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where things go in one job directory; the optional fields move a part elsewhere."""
  job_dir: str
  checkpoint_dir: Optional[str] = None   # instead of JOB_DIR/checkpoints
  log_dir: Optional[str] = None          # instead of JOB_DIR/logs
  model_dir: Optional[str] = None        # also export the SavedModel at this path's root

  @property
  def config(self) -> str:
    return storage.join(self.job_dir, CONFIG_FILE)

  @property
  def metrics(self) -> str:
    return storage.join(self.job_dir, METRICS_FILE)

  @property
  def checkpoints(self) -> str:
    return self.checkpoint_dir or storage.join(self.job_dir, CHECKPOINT_DIR)

  @property
  def logs_root(self) -> str:
    """The TensorBoard run that holds the HParams session; its subruns are `logs(run)`."""
    return self.log_dir or storage.join(self.job_dir, LOG_DIR)

  def logs(self, run: str) -> str:
    return storage.join(self.logs_root, run)

  def export_base(self, model_name: str) -> str:
    return storage.join(self.job_dir, EXPORT_DIR, model_name)


class PlatformDirs(Protocol):
  """Output directories a platform chose (trainer/cluster/vertex.py's `Outputs`)."""
  base_dir: str
  model_dir: Optional[str]
  checkpoint_dir: Optional[str]
  tensorboard_dir: Optional[str]


def for_run(job_dir_flag: Optional[str], default_job_dir: str,
            platform: Optional[PlatformDirs]) -> Paths:
  """The paths of a run: --job-dir wins over Vertex AI's AIP_* directories, which win over
  the default.

  Args:
    job_dir_flag: --job-dir, None if not given.
    default_job_dir: the job dir without --job-dir or Vertex AI (runs/<model-name>).
    platform: Vertex AI's directories (cluster.vertex.outputs), None elsewhere.
  """
  if job_dir_flag or platform is None:
    if platform is not None:
      log.info("--job-dir %s given: everything goes there; Vertex AI's AIP_MODEL_DIR, "
               "AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR are not used.", job_dir_flag)
    return Paths(job_dir_flag or default_job_dir)
  paths = Paths(platform.base_dir, checkpoint_dir=platform.checkpoint_dir,
                log_dir=platform.tensorboard_dir, model_dir=platform.model_dir)
  log.info("Vertex AI output directories: job files in %s, checkpoints in %s, TensorBoard logs "
           "in %s, SavedModel%s.", paths.job_dir, paths.checkpoints, paths.logs("{train,eval}"),
           f" also at the root of {paths.model_dir}" if paths.model_dir else "")
  return paths


def missing_exports(metrics: dict, bases: list[str], model_dir: Optional[str] = None) -> list[str]:
  """What a finished job's export lacks, as version paths: [] when all is in place.

  Args:
    metrics: metrics.json of the finished run, with `export.version` and
      `export.paths`.
    bases: the model base paths the current flags ask for (the job's own
      export/<model> and, with --publish-dir, PUBLISH_DIR/<model>). A new
      --publish-dir or --model-name shows up here as a base with no version.
    model_dir: Vertex AI's AIP_MODEL_DIR, which must hold saved_model.pb at its root.
  """
  version = str(metrics["export"]["version"])
  wanted = [storage.join(base, version) for base in bases]
  recorded = set(metrics["export"]["paths"])
  missing = [path for path in wanted
             if path not in recorded or not storage.exists(storage.join(path, versions.SAVED_MODEL_PB))]
  if model_dir and not storage.exists(storage.join(model_dir, versions.SAVED_MODEL_PB)):
    missing.append(model_dir)
  return missing
