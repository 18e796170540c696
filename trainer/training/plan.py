"""The plan of a training run: what this process does, decided before any strategy exists.

Where this process sits in the cluster, where it writes, what it trains on,
and whether the chief finishes a fully trained multi-worker run alone. The
cheap checks (cluster description, data, writable paths, batch size) run
here, so bad input fails in seconds instead of after the cluster has
assembled.

A rerun whose checkpoint already holds every epoch never creates the
strategy at all: non-chief workers stop at once and the chief exports alone.
A Kubernetes Job never reruns a Succeeded index, so waiting for workers that
finished would wait for ever.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Optional

import tensorflow as tf

from trainer import environment
from trainer import errors
from trainer.cluster import resolver
from trainer.config import TrainConfig
from trainer.data import pipeline as data_lib
from trainer.storage import api as storage
from trainer.storage import jobdir
from trainer.training import checkpoints
from trainer.training import precision as precision_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one process of a training run does, decided before any strategy exists."""
  cluster: resolver.Cluster
  paths: jobdir.Paths
  source: data_lib.Source
  steps_per_epoch: int
  # Training is complete (the checkpoint holds every epoch) in a multi-worker
  # run: the chief finishes alone, on the default strategy; others stop.
  finish_alone: bool
  env: Mapping[str, str]
  # --mixed-precision resolved for this machine (auto: by the CPU's instruction set).
  precision: precision_lib.Choice
  # Whether TensorFlow's CPU kernels are oneDNN's (trainer/environment.py's prefer_onednn).
  onednn: bool

  @property
  def nothing_to_do(self) -> bool:
    return self.finish_alone and not self.cluster.is_chief


def make(config: TrainConfig, injected_strategy: bool = False,
         datasets: Optional[data_lib.Source] = None,
         env: Optional[Mapping[str, str]] = None) -> Plan:
  """Reads the cluster, the data and the job directory; checks what can be checked cheaply.

  Args:
    config: the validated configuration.
    injected_strategy: a test passes its own strategy: one machine, whatever
      the environment says.
    datasets: a Source to use instead of loading `config.dataset`.
    env: the environment (trainer/environment.py); default: this process's.

  Raises:
    UserError: bad input (exit code 2).
    TransientError: storage could not be reached (exit code 142).
  """
  env = environment.read() if env is None else env
  # Before anything is read: bfloat16 on a CPU that cannot run it fails here, in
  # a second, rather than in the first training step. Listing devices starts no
  # TensorFlow context, so MultiWorkerMirroredStrategy can still configure it.
  onednn = precision_lib.onednn_enabled()
  precision = precision_lib.choose(config.mixed_precision,
                                   len(tf.config.list_physical_devices("GPU")),
                                   precision_lib.cpu_flags(),
                                   env.get(environment.ONEDNN_MAX_CPU_ISA), onednn)
  cluster = (resolver.Cluster.single_machine("injected strategy") if injected_strategy
             else resolver.cluster_from_env(env))
  source = datasets or data_lib.load(config)
  paths = jobdir.for_run(config.job_dir, config.resolved_job_dir(),
                         resolver.vertex_outputs(env))
  if cluster.is_chief:  # the only writer (jobdir): other workers leave no probe objects
    storage.ensure_writable_dir(paths.job_dir, "--job-dir")
    if paths.model_dir:
      storage.ensure_writable_dir(paths.model_dir, "AIP_MODEL_DIR")
    if config.publish_dir:
      storage.ensure_writable_dir(config.publish_dir, "--publish-dir")
  steps_per_epoch = source.info.num_train_examples // config.batch_size
  if steps_per_epoch < 1:
    raise errors.ConfigError(
        f"--batch-size {config.batch_size} is larger than the {source.info.num_train_examples} "
        "training examples: use a smaller batch.")

  done = checkpoints.progress(paths.checkpoints)
  if done is not None and done.epochs_done > config.epochs:
    # On every worker, before any of them decides to finish alone. (The loop
    # checks what it restores too: where the newest checkpoint cannot be read
    # here, it restores an older one.)
    raise checkpoints.fewer_epochs_than_trained(done.path, done.epochs_done, config.epochs)
  finish_alone = (cluster.is_multi_worker and done is not None
                  and done.epochs_done >= config.epochs)
  if finish_alone and not cluster.is_chief:
    log.info("Checkpoint %s holds all %d epochs: training is complete and the chief "
             "exports. Nothing to do on this worker.", done.path, config.epochs)
  elif finish_alone:
    log.info("Checkpoint %s holds all %d epochs: finishing on the chief alone, without "
             "the other workers.", done.path, config.epochs)
    cluster = resolver.Cluster.single_machine(
        f"{cluster.source}; training complete, finishing alone")
  return Plan(cluster=cluster, paths=paths, source=source, steps_per_epoch=steps_per_epoch,
              finish_alone=finish_alone, env=env, precision=precision, onednn=onednn)
