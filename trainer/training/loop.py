"""The training loop: epochs of compiled steps, evaluation, the chief's export, in order.

The step functions themselves are trainer/training/steps.py's; what a person
watches is trainer/telemetry/progress.py's (bar or log lines) and, with
--profile-steps, trainer/telemetry/profiling.py's; the HParams session is
trainer/telemetry/hparams.py's; TensorBoard writing is
trainer/telemetry/summaries.py's, the sums behind the metrics
trainer/training/metrics.py's.

Progress lives in the checkpoint (trainer/training/checkpoints.py): completed
epochs and steps into the current epoch. A rerun with the same job dir
restores it, says where it resumed, and records it in metrics.json
(`resumed_from`). SIGTERM (trainer/training/preemption.py) is turned into a
checkpoint at a step every worker agrees on (the flag is all-reduced with the
next training call), then exit code 143; after the last step it lets the
final evaluation and the export finish.

The end of a multi-worker run is ordered so that no worker can finish while
the chief's results are not yet durable (a Kubernetes Job never reruns a
Succeeded index, so a worker that left early could never rejoin a chief that
must restart): final checkpoint, final evaluation, the chief's export and
metrics.json, then a barrier that every worker passes. If the chief dies
before the barrier, every worker exits 129 and all are recreated.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from trainer import errors
from trainer import export as export_lib
from trainer import models as model_lib
from trainer.cluster import distribution
from trainer.config import TrainConfig
from trainer.data import pipeline as data_lib
from trainer.storage import api as storage
from trainer.storage import jobdir
from trainer.storage import joblock
from trainer.telemetry import hparams
from trainer.telemetry import profiling
from trainer.telemetry import progress as progress_lib
from trainer.telemetry import records
from trainer.telemetry import summaries
from trainer.training import checkpoints
from trainer.training import metrics as metrics_lib
from trainer.training import optimizer as optimizer_lib
from trainer.training import plan as plan_lib
from trainer.training import preemption
from trainer.training import resume
from trainer.training import steps as steps_lib

log = logging.getLogger(__name__)

# Test images shown in TensorBoard's predictions grid.
SAMPLE_IMAGES = 20

# Host-to-device prefetch: each replica's next batch is copied to its device
# (GPU) while the current step runs, so the step never waits for a transfer.
_DEVICE_PREFETCH = tf.distribute.InputOptions(experimental_fetch_to_device=True)


class Loop:
  """State and steps of one training run."""

  def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy,
               plan: plan_lib.Plan, lock: Optional[joblock.JobDirLock] = None):
    """`plan`: trainer/training/plan.py's; `lock`: the chief's job-dir lock, refreshed
    as the run goes on."""
    self.config = config
    self.alone = plan.finish_alone  # the chief finishing a trained multi-worker run by itself
    self.lock = lock
    self.strategy = strategy
    self.cluster = plan.cluster
    self.source = plan.source
    self.info = plan.source.info
    self.paths: jobdir.Paths = plan.paths
    self.steps_per_epoch = plan.steps_per_epoch
    self.precision = plan.precision
    self.onednn = plan.onednn
    self.global_batch = config.batch_size
    self.sigterm = preemption.SigtermWatch(peers=plan.cluster.num_workers > 1)
    self._train_seconds = 0.0  # steady-state training time (first call excluded)
    self._train_images = 0
    self._last_eval: Optional[dict[str, Any]] = None
    # Where a rerun resumed: {"checkpoint", "epoch", "step", "global_step"}, None if it started
    # afresh; recorded in metrics.json.
    self.resumed_from: Optional[dict[str, Any]] = None
    self._start_step = 0  # the global step this run started from; recorded as steps_trained
    # Set as the run starts (`run`, `_run`): this worker's write directory, TensorBoard
    # writers, the profiler window, and the test images shown in TensorBoard.
    self.write_dir: Optional[str] = None
    self.summaries: Optional[summaries.Summaries] = None
    self.profile: Optional[profiling.ProfileWindow] = None
    self._samples: Optional[tuple[np.ndarray, np.ndarray]] = None

    with strategy.scope():
      self.model = model_lib.create_model(config.model, self.info.image_shape,
                                          self.info.num_classes, plan.precision.policy,
                                          config.pixel_range)
      self.optimizer = optimizer_lib.create(config, plan.steps_per_epoch,
                                            self.model.trainable_variables, plan.precision.policy)
      self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
      self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")
      self.train_sums = metrics_lib.Sums(self.info.num_classes, confusion=False)
      self.eval_sums = metrics_lib.Sums(self.info.num_classes, confusion=True)
    self.checkpoints = checkpoints.Checkpoints(
        plan.paths.checkpoints, config.keep_checkpoints, plan.cluster.is_chief, model=self.model,
        optimizer=self.optimizer, epoch=self.epoch, epoch_step=self.epoch_step)
    eval_data = strategy.distribute_datasets_from_function(
        lambda ctx: data_lib.eval_dataset(self.source, self.config, ctx), _DEVICE_PREFETCH)
    self.steps = steps_lib.build(self.model, self.optimizer, strategy, config,
                                 self.info.num_classes, self.train_sums, self.eval_sums, eval_data)
    self.xla = self.steps.xla
    self.progress = progress_lib.create(config.progress, plan.cluster.is_chief, log,
                                        config.epochs, plan.steps_per_epoch, self.global_batch)

  # ------------------------------------------------------------ the run

  def run(self) -> dict[str, Any]:
    config, cluster = self.config, self.cluster
    distribution.log_batch(self.strategy, config.batch_size, config.learning_rate,
                           config.lr_reference_batch, config.lr_scaling,
                           config.effective_learning_rate())
    log.info(data_lib.describe(self.source, config, cluster.num_workers))
    log.info("XLA: %s (--jit-compile %s); CPU kernels: %s; compute precision: %s (%s).",
             "on" if self.xla else "off", config.jit_compile,
             "oneDNN" if self.onednn else "TensorFlow's own (oneDNN off: TF_ENABLE_ONEDNN_OPTS=0)",
             self.precision.name, self.precision.reason)
    self._restore()
    epoch, step = int(self.epoch.numpy()), int(self.epoch_step.numpy())
    self._start_step = self._global_step()

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
      if self.summaries:
        self.summaries.close()  # TensorBoard's events durable, whatever ends the run
      distribution.remove_worker_dir(cluster, self.write_dir)

  def _run(self, epoch: int, step: int) -> dict[str, Any]:
    if self.cluster.is_chief and not self.alone:
      storage.write_json(self.paths.config, records.config_record(
          self.config, self.paths.job_dir, self._records_cluster(), self.xla,
          self.steps_per_epoch, self.info, self.precision.name, self.precision.reason,
          self.onednn))
      hparams.write(self.paths, self.config, self._records_cluster(), self.xla,
                    self.precision.name)
    self.summaries = summaries.Summaries(self.paths.logs("train"), self.paths.logs("eval"),
                                         self.cluster.is_chief, self.info.class_names)
    self.summaries.graph(self.model, self.info.image_shape)
    started = time.time()
    with distribution.peer_errors(self.cluster), self.progress:  # bars or log lines
      with profiling.ProfileWindow(self.config.profile_window(), self.paths.logs("train"),
                                   self.cluster.is_chief) as self.profile:
        self._train(epoch, step)
      self.sigterm.finishing = True
      results = self._last_eval or self.evaluate_and_report(final=True)
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
    resume.check(latest, epoch, self.config, self.steps_per_epoch, self.paths.config)
    self.resumed_from = {"checkpoint": latest, "epoch": epoch, "step": step,
                         "global_step": self._global_step()}
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
        last_call = epoch == config.epochs - 1 and step + n == self.steps_per_epoch
        t0 = time.time()
        stop_flag = tf.constant(float(self.sigterm.received))
        # From here a SIGTERM cannot stop the last call (its flag is read), so it says so.
        self.sigterm.in_last_call = last_call
        stop = self.steps.train_steps(iterator, tf.constant(n), stop_flag)
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
        if last_call:
          # The run's last training call has returned: no call follows to carry a stop
          # flag, so a SIGTERM from here on lets the final evaluation and the export
          # finish (trainer/training/preemption.py). Set before this step is logged, so
          # that a SIGTERM sent on that line is announced as what it does.
          self.sigterm.finishing = True
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
      self._last_eval = self.evaluate_and_report(final=self.sigterm.finishing)
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

  def evaluate_and_report(self, final: bool) -> dict[str, Any]:
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
    if self._samples is None:
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

  def _records_cluster(self) -> records.TrainedBy:
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
    metrics["resumed_from"] = self.resumed_from
    metrics["steps_trained"] = self._global_step() - self._start_step  # by this run; 0: exported only
    # A chief that found training complete and finished without the other workers.
    metrics["finished_alone"] = self.alone
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
