"""Training: a custom loop that runs unchanged under any tf.distribute strategy.

Why not `model.fit`: in TF 2.21 / Keras 3.15, `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585; shared/ENVIRONMENT.md),
and Keras 3's callbacks have no chief logic, so `BackupAndRestore` and
`TensorBoard` would make every worker write into the same directory. The
alternative, legacy `tf_keras`, pins TensorFlow to its own minor version and
has no future. So this loop drives Keras 3 layers and optimiser directly with
`strategy.run`: the same code runs under the default strategy, `MirroredStrategy`
and `MultiWorkerMirroredStrategy`, and tests prove each.

The step functions themselves are trainer/steps.py's; what a person watches
is trainer/progress.py's (bar or log lines) and, with --profile-steps,
trainer/profiling.py's; the HParams session is trainer/hparams.py's.

Progress lives in the checkpoint (trainer/checkpoints.py): completed epochs
and steps into the current epoch. A rerun with the same job dir restores it
and says where it resumed. SIGTERM (trainer/preemption.py) is turned into a
checkpoint at a step every worker agrees on (the flag is all-reduced with the
next training call), then exit code 143; after the last step it lets the
final evaluation and the export finish. TensorBoard writing is
trainer/summaries.py's, the sums behind the metrics trainer/metrics.py's.

The end of a multi-worker run is ordered so that no worker can finish while
the chief's results are not yet durable (a Kubernetes Job never reruns a
Succeeded index, so a worker that left early could never rejoin a chief that
must restart): final checkpoint, final evaluation, the chief's export and
metrics.json, then a barrier that every worker passes. If the chief dies
before the barrier, every worker exits 129 and all are recreated. A rerun
whose checkpoint already holds every epoch never creates the strategy at all:
non-chief workers exit 0 at once and the chief exports alone (`run`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from trainer import checkpoints
from trainer import data as data_lib
from trainer import distribution
from trainer import errors
from trainer import export as export_lib
from trainer import hparams
from trainer import jobdir
from trainer import joblock
from trainer import metrics as metrics_lib
from trainer import model as model_lib
from trainer import optimizer as optimizer_lib
from trainer import preemption
from trainer import progress as progress_lib
from trainer import profiling
from trainer import records
from trainer import steps as steps_lib
from trainer import storage
from trainer import summaries
from trainer.config import TrainConfig

log = logging.getLogger(__name__)

# Test images shown in TensorBoard's predictions grid.
SAMPLE_IMAGES = 20

# Host-to-device prefetch: each replica's next batch is copied to its device
# (GPU) while the current step runs, so the step never waits for a transfer.
_DEVICE_PREFETCH = tf.distribute.InputOptions(experimental_fetch_to_device=True)

def run(config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None,
        datasets: Optional[data_lib.Source] = None) -> dict[str, Any]:
  """Trains, evaluates and exports as `config` says; resumes from the job dir.

  Cheap checks (config, cluster description, data, writable paths) run
  before the strategy is created, so bad input fails in seconds instead of
  after the cluster has assembled. So does the check for a finished run: if
  the newest checkpoint holds every epoch, a non-chief worker has nothing to
  do and returns at once, and the chief finishes (evaluates, exports, or
  confirms that the export is in place) alone, without waiting for workers
  that a Kubernetes Job would never start again.

  Args:
    config: the resolved configuration.
    strategy: a strategy to use instead of the one the environment calls
      for (tests pass MirroredStrategy over logical devices).
    datasets: a Source to use instead of loading `config.dataset`.

  Returns:
    The final metrics, as written to metrics.json.

  Raises:
    UserError: bad input (exit code 2).
    TransientError: storage failed in a way a rerun can get past (exit code 142).
    Preempted: SIGTERM; state saved (exit code 143).
    PeerLostError: another worker was lost (exit code 129).
  """
  config.validate()
  cluster = (distribution.Cluster(1, 0, True, None, "injected strategy") if strategy
             else distribution.cluster_from_env())
  source = datasets or data_lib.load(config)
  paths = jobdir.for_run(config.job_dir, config.resolved_job_dir(),
                         distribution.vertex_outputs())
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
  alone = cluster.is_multi_worker and done is not None and done.epochs_done >= config.epochs
  if alone:
    if not cluster.is_chief:
      log.info("Checkpoint %s holds all %d epochs: training is complete and the chief "
               "exports. Nothing to do on this worker.", done.path, config.epochs)
      return {}
    log.info("Checkpoint %s holds all %d epochs: finishing on the chief alone, without "
             "the other workers.", done.path, config.epochs)
    cluster = distribution.Cluster(1, 0, True, None, f"{cluster.source}; training complete, "
                                   "finishing alone")
    strategy = tf.distribute.get_strategy()
  # Only the chief writes to the job dir, so only it holds the lock; it takes
  # it before the cluster assembles, so a second training fails fast.
  lock = joblock.hold(paths.job_dir, config.job_lock_wait_s) if cluster.is_chief else None
  try:
    if not strategy:
      distribution.wait_for_chief(cluster)
      strategy = distribution.create_strategy(cluster, config.collective_timeout_s)
    distribution.check_batch(strategy, config.batch_size)
    tf.random.set_seed(config.seed)
    return _Loop(config, strategy, cluster, source, paths, steps_per_epoch, alone, lock).run()
  finally:
    if lock:
      lock.release()


class _Loop:
  """State and steps of one training run."""

  def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy,
               cluster: distribution.Cluster, source: data_lib.Source, paths: jobdir.Paths,
               steps_per_epoch: int, alone: bool = False,
               lock: Optional[joblock.JobDirLock] = None):
    """`alone`: the chief finishing a fully trained multi-worker run by itself (see `run`).
    `lock`: the chief's job-dir lock, refreshed as the run goes on."""
    self.config = config
    self.alone = alone
    self.lock = lock
    self.strategy = strategy
    self.cluster = cluster
    self.source = source
    self.info = source.info
    self.paths = paths
    self.steps_per_epoch = steps_per_epoch
    self.global_batch = config.batch_size
    self.sigterm = preemption.SigtermWatch()
    self._train_seconds = 0.0  # steady-state training time (first call excluded)
    self._train_images = 0
    self._last_eval: Optional[dict[str, Any]] = None

    with strategy.scope():
      self.model = model_lib.create_model(config.model, self.info.image_shape,
                                          self.info.num_classes, config.mixed_precision)
      self.optimizer = optimizer_lib.create(config, steps_per_epoch,
                                            self.model.trainable_variables)
      self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
      self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")
      self.train_sums = metrics_lib.Sums(self.info.num_classes, confusion=False)
      self.eval_sums = metrics_lib.Sums(self.info.num_classes, confusion=True)
    self.checkpoints = checkpoints.Checkpoints(
        paths.checkpoints, config.keep_checkpoints, cluster.is_chief, model=self.model,
        optimizer=self.optimizer, epoch=self.epoch, epoch_step=self.epoch_step)
    eval_data = strategy.distribute_datasets_from_function(
        lambda ctx: data_lib.eval_dataset(self.source, self.config, ctx), _DEVICE_PREFETCH)
    self.steps = steps_lib.build(self.model, self.optimizer, strategy, config,
                                 self.info.num_classes, self.train_sums, self.eval_sums, eval_data)
    self.xla = self.steps.xla
    self.progress = progress_lib.create(config.progress, cluster.is_chief, log, config.epochs,
                                        steps_per_epoch, self.global_batch)

  # ------------------------------------------------------------ the run

  def run(self) -> dict[str, Any]:
    config, cluster = self.config, self.cluster
    distribution.log_batch(self.strategy, config.batch_size, config.learning_rate,
                           config.lr_reference_batch, config.lr_scaling,
                           config.effective_learning_rate())
    log.info(data_lib.describe(self.source, config, cluster.num_workers))
    log.info("XLA: %s (--jit-compile %s); mixed precision: %s.", "on" if self.xla else "off",
             config.jit_compile, config.mixed_precision)
    self._restore()
    epoch, step = int(self.epoch.numpy()), int(self.epoch_step.numpy())

    previous = storage.read_json(self.paths.metrics)
    if (epoch >= config.epochs and previous and previous.get("global_step") == self._global_step()
        and previous.get("export")):
      missing = jobdir.missing_exports(previous, self._export_bases(), self.paths.model_dir)
      if not missing:
        log.info("Job already complete: %d epochs, global step %d, exported as version %s at %s. "
                 "Nothing to do; use a new --job-dir (or more --epochs) to train again.",
                 config.epochs, self._global_step(), previous["export"]["version"],
                 ", ".join(previous["export"]["paths"]))
        return previous
      log.info("Training is complete (global step %d) but %s holds no exported version: "
               "exporting.", self._global_step(), ", ".join(missing))

    self.write_dir = distribution.worker_dir(cluster, self.paths.job_dir)
    try:
      with self.sigterm:
        return self._run(epoch, step)
    finally:
      distribution.remove_worker_dir(cluster, self.write_dir)

  def _run(self, epoch: int, step: int) -> dict[str, Any]:
    if self.cluster.is_chief and not self.alone:
      storage.write_json(self.paths.config, records.config_record(
          self.config, self.paths.job_dir, self._records_cluster(), self.xla,
          self.steps_per_epoch, self.info))
      hparams.write(self.paths, self.config, self._records_cluster(), self.xla)
    self.summaries = summaries.Summaries(self.paths.logs("train"), self.paths.logs("eval"),
                                         self.cluster.is_chief, self.info.class_names)
    self.summaries.graph(self.model, self.info.image_shape)
    started = time.time()
    with distribution.peer_errors(self.cluster), self.progress:  # bars or log lines
      with profiling.ProfileWindow(self.config.profile_window(), self.paths.logs("train"),
                                   self.cluster.is_chief) as self.profile:
        self._train(epoch, step)
      self.sigterm.finishing = True
      results = self._last_eval or self._evaluate_and_report(final=True)
    # Identical on every worker when replicas stayed in sync: a one-line
    # check that distributed training did what it should.
    fingerprint = records.weights_fingerprint(self.model)
    log.info("Final weights fingerprint (sha256): %s", fingerprint)
    metrics = self._finish(results, time.time() - started, fingerprint)
    distribution.wait_for_every_worker(self.cluster, self.steps.barrier)
    if self.sigterm.received:
      log.info("The export finished after SIGTERM: the job is complete, so this is a "
               "normal exit (code 0), not a preemption.")
    return metrics

  def _export_bases(self) -> list[str]:
    """Model base paths the export goes to: the job's own, then --publish-dir's."""
    name = self.config.resolved_model_name()
    bases = [self.paths.export_base(name)]
    if self.config.publish_dir:
      bases.append(storage.join(self.config.publish_dir, name))
    return bases

  def _global_step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def _restore(self):
    latest = self.checkpoints.restore()
    if not latest:
      return
    epoch, step = int(self.epoch.numpy()), int(self.epoch_step.numpy())
    if epoch >= self.config.epochs:
      log.info("Restored %s: all %d epochs already trained (global step %d).",
               latest, self.config.epochs, self._global_step())
    else:
      log.info("Resuming from checkpoint %s at epoch %d/%d, step %d/%d (global step %d).",
               latest, epoch + 1, self.config.epochs, step, self.steps_per_epoch,
               self._global_step())

  def _train(self, epoch: int, step: int):
    config = self.config
    start_step = self._global_step()  # a resumed run shuffles afresh (data.shuffle_seed)
    train_data = self.strategy.distribute_datasets_from_function(
        lambda ctx: data_lib.train_dataset(self.source, config, ctx, start_step), _DEVICE_PREFETCH)
    iterator = iter(train_data)
    first_call = True
    interval_start, interval_images = time.time(), 0
    # Scalars are logged when the global step reaches a multiple of
    # log_every_steps, and at the end of each epoch.
    global_step = self._global_step()
    while epoch < config.epochs:
      self.progress.start_epoch(epoch, step)
      while step < self.steps_per_epoch:
        to_log = config.log_every_steps - global_step % config.log_every_steps
        n = min(config.steps_per_execution, self.steps_per_epoch - step, to_log)
        n = self.profile.before_call(global_step, n)  # --profile-steps: calls end at its edges
        t0 = time.time()
        stop = self.steps.train_steps(iterator, tf.constant(n), tf.constant(float(self.sigterm.received)))
        if float(stop) > 0:  # float() waits for the call to finish
          path = self._save()
          where = path if self.cluster.is_chief else "by the chief in the job directory"
          raise errors.Preempted(
              f"stopped on SIGTERM at epoch {epoch + 1}, step {step}/{self.steps_per_epoch}; "
              f"checkpoint saved {where}. Rerun the same command to resume.")
        dt = time.time() - t0
        if not first_call:  # the first call traces and compiles
          self._train_seconds += dt
          self._train_images += n * self.global_batch
        first_call = False
        step += n
        self.progress.advance(n)
        global_step += n
        self.profile.after_call(global_step)
        interval_images += n * self.global_batch
        self.epoch_step.assign(step)
        if global_step % config.log_every_steps == 0 or step == self.steps_per_epoch:
          elapsed = time.time() - interval_start
          self._log_train(epoch, step, interval_images / max(elapsed, 1e-9))
          self._keep_lock()
          interval_start, interval_images = time.time(), 0
      self.progress.end_epoch()
      epoch, step = epoch + 1, 0
      self.epoch.assign(epoch)
      self.epoch_step.assign(0)
      self.sigterm.finishing = epoch == config.epochs
      self._last_eval = self._evaluate_and_report(final=self.sigterm.finishing)
      path = self._save()
      log.info("Epoch %d/%d done: eval loss %.4f, accuracy %.4f; checkpoint %s saved.",
               epoch, config.epochs, self._last_eval["loss"], self._last_eval["accuracy"], path)
      interval_start = time.time()

  def _log_train(self, epoch: int, step: int, images_per_sec: float):
    sums = self.train_sums.read_and_reset()
    lr = float(self.optimizer.learning_rate.numpy())
    self.summaries.train_scalars(self._global_step(), sums["loss"], sums["accuracy"], lr,
                                 images_per_sec)
    self.progress.train_metrics(epoch, step, sums["loss"], sums["accuracy"], lr, images_per_sec)

  def _evaluate_and_report(self, final: bool) -> dict[str, Any]:
    started = time.time()
    self.steps.evaluate()
    results = self.eval_sums.read_and_reset()
    seconds = time.time() - started
    global_step = self._global_step()
    self.summaries.eval_scalars(global_step, results["loss"], results["accuracy"],
                                results["count"] / max(seconds, 1e-9))
    if self.summaries.pictures_due(final):
      images, labels = self._sample_images()
      predictions = np.argmax(self.model(images, training=False), axis=-1)
      self.summaries.eval_pictures(global_step, results["confusion"], images, labels, predictions)
    self.summaries.flush()
    if final:
      log.info("Final evaluation on %d images: loss %.4f, accuracy %.4f.", results["count"],
               results["loss"], results["accuracy"])
    return results

  def _sample_images(self) -> tuple[np.ndarray, np.ndarray]:
    if not hasattr(self, "_samples"):
      ds = self.source.read(False, None, self.config.seed).take(SAMPLE_IMAGES).batch(SAMPLE_IMAGES)
      images, labels = next(iter(ds))
      self._samples = (images.numpy(), labels.numpy())
    return self._samples

  def _save(self) -> str:
    self._keep_lock()
    return self.checkpoints.save(self._global_step(), self.write_dir)

  def _keep_lock(self) -> None:
    """Extends the chief's job-dir lease (cheap unless a quarter of it has passed).

    Raises JobDirLocked if another training took the job dir over while this
    one stalled past its lease: better to stop than to overwrite its files.
    """
    if self.lock:
      self.lock.maybe_refresh()

  def _records_cluster(self) -> records.Cluster:
    """Who trained, for config.json and metrics.json; a chief finishing alone reports the training's."""
    return records.who_trained(self.cluster.num_workers, self.strategy.num_replicas_in_sync,
                               type(self.strategy).__name__, self.cluster.source,
                               storage.read_json(self.paths.config) if self.alone else None)

  def _finish(self, results: dict[str, Any], wall_seconds: float,
              fingerprint: str) -> dict[str, Any]:
    """Builds metrics.json; on the chief, exports, then writes it (last: it marks the run done)."""
    metrics = records.final_metrics(
        self.config, self.info, results, self._global_step(), wall_seconds,
        self._train_images / self._train_seconds if self._train_seconds else None,
        self._records_cluster())
    if not self.cluster.is_chief:
      return metrics
    self._keep_lock()
    version, paths = export_lib.export(
        self.model, self.info, self.config.model, self._export_bases(),
        run_info={"job_dir": self.paths.job_dir, "global_step": self._global_step(),
                  "weights_sha256": fingerprint, "test_accuracy": results["accuracy"]},
        model_dir=self.paths.model_dir)
    metrics["export"] = {"version": version, "paths": paths}
    if self.paths.model_dir:
      metrics["export"]["model_dir"] = self.paths.model_dir
    storage.write_json(self.paths.metrics, metrics)
    log.info("Wrote %s: test accuracy %.4f, %s training images/s.", self.paths.metrics,
             metrics["test_accuracy"],
             f"{metrics['train_images_per_sec']:.0f}" if metrics["train_images_per_sec"] else "n/a")
    return metrics
