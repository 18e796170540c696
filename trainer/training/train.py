"""Training: `run(config, strategy=None, datasets=None)`, from a configuration to an export.

Why a custom loop and not `model.fit`: in TF 2.21 / Keras 3.15, `fit` fails
under MultiWorkerMirroredStrategy (`ValueError: Attempt to convert a value
(PerReplica:{...})`, raised from keras/src/backend/tensorflow/trainer.py
through `strategy.reduce`; keras-team/keras#20585, open), and Keras 3's
callbacks have no chief logic, so `BackupAndRestore` and `TensorBoard` would
make every worker write into the same directory. The alternative, legacy
`tf_keras` (`TF_USE_LEGACY_KERAS=1`, tensorflow/tensorflow#72388), pins
TensorFlow to its own minor version and has no future. So the loop
(trainer/training/loop.py) drives Keras 3 layers and optimiser directly with
`strategy.run`: the same code runs under the default strategy,
`MirroredStrategy` and `MultiWorkerMirroredStrategy`, and tests prove each.

The order: the plan (trainer/training/plan.py: cluster, paths, data, cheap
checks), the chief's lock on the job directory, the strategy, the loop.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Optional

import tensorflow as tf

from trainer import errors
from trainer.cluster import distribution
from trainer.config import TrainConfig
from trainer.data import pipeline as data_lib
from trainer.storage import joblock
from trainer.training import loop
from trainer.training import plan as plan_lib

log = logging.getLogger(__name__)


def run(config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None,
        datasets: Optional[data_lib.Source] = None) -> dict[str, Any]:
  """Trains, evaluates and exports as `config` says; resumes from the job dir.

  Args:
    config: the resolved configuration.
    strategy: a strategy to use instead of the one the environment calls
      for (tests pass MirroredStrategy over logical devices).
    datasets: a Source to use instead of loading `config.dataset`.

  Returns:
    The final metrics, as written to metrics.json ({} on a worker with
    nothing to do).

  Raises:
    UserError: bad input (exit code 2).
    TransientError: storage failed in a way a rerun can get past (exit code 142).
    Preempted: SIGTERM; state saved (exit code 143).
    PeerLostError: another worker was lost (exit code 129).
  """
  config.validate()
  the_plan = plan_lib.make(config, injected_strategy=strategy is not None, datasets=datasets)
  if the_plan.nothing_to_do:
    return {}
  if the_plan.finish_alone:
    strategy = tf.distribute.get_strategy()
  # From here a SIGTERM must release the lock: an exception unwinds to the
  # `finally` below (the imports are done, so nothing swallows it), until the
  # loop's own handler takes over (trainer/training/preemption.py).
  previous = signal.signal(signal.SIGTERM, _preempted_before_training)
  lock = None
  try:
    # Only the chief writes to the job dir, so only it holds the lock; it takes
    # it before the cluster assembles, so a second training fails fast.
    lock = (joblock.hold(the_plan.paths.job_dir, config.job_lock_wait_s, env=the_plan.env)
            if the_plan.cluster.is_chief else None)
    if not strategy:
      distribution.wait_for_chief(the_plan.cluster)
      distribution.wait_for_peers(the_plan.cluster, tick=lock.maybe_refresh if lock else None)
      strategy = distribution.create_strategy(the_plan.cluster, config.collective_timeout_s)
    distribution.check_batch(strategy, config.batch_size)
    tf.random.set_seed(config.seed)
    return loop.Loop(config, strategy, the_plan, lock).run()
  finally:
    signal.signal(signal.SIGTERM, previous)
    if lock:
      lock.release()


def _preempted_before_training(signum, frame):
  del signum, frame
  raise errors.Preempted("SIGTERM before training started: nothing to save yet; exiting.")
