"""The compiled functions a training run calls: training steps, evaluation, a barrier.

Each runs unchanged under any tf.distribute strategy (default, Mirrored,
MultiWorkerMirrored). Per training step, each replica computes its share of
the loss, averaged over the *global* batch so that summing over replicas
gives the mean; the optimiser all-reduces the gradients and applies them.
Several steps run per call (`steps_per_execution`) to keep Python off the hot
path. Under MultiWorkerMirroredStrategy every function here is a collective:
it returns only when every worker has run it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import tensorflow as tf

from trainer import errors
from trainer.training import metrics as metrics_lib
from trainer.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Steps:
  """train_steps(iterator, n, stop_flag) -> stop; evaluate(); barrier()."""
  train_steps: Callable
  evaluate: Callable
  barrier: Callable
  xla: bool  # whether forward and backward are XLA-compiled


def per_example_loss(labels: tf.Tensor, logits: tf.Tensor, num_classes: int,
                     label_smoothing: float) -> tf.Tensor:
  """Per-example cross-entropy, with label smoothing if configured."""
  if label_smoothing:
    targets = tf.one_hot(labels, num_classes) * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def _cross_replica_forward(model: keras.Model, strategy: tf.distribute.Strategy) -> bool:
  """Whether the forward pass all-reduces (synchronised BatchNorm) across several non-GPU
  replicas, where TensorFlow would need a merge_call inside the nested XLA function (it
  raises RuntimeError); on GPUs it compiles the all-reduce into the XLA computation."""
  if strategy.num_replicas_in_sync == 1:
    return False  # nothing to all-reduce; and the default strategy has no worker_devices
  synchronised = any(getattr(layer, "synchronized", False) for layer in model.layers)
  return synchronised and not all("GPU" in d.upper() for d in strategy.extended.worker_devices)


def build(model: keras.Model, optimizer: keras.optimizers.Optimizer,
          strategy: tf.distribute.Strategy, config: TrainConfig, num_classes: int,
          train_sums: metrics_lib.Sums, eval_sums: metrics_lib.Sums,
          eval_data: tf.distribute.DistributedDataset) -> Steps:
  """Compiles the run's functions over `model`, `optimizer` and `strategy`.

  Args:
    train_sums, eval_sums: accumulate loss, accuracy (and the confusion
      matrix) across steps, read by the caller when it logs.
    eval_data: the distributed eval split; `evaluate` makes one pass over it.
  """
  global_batch = config.batch_size

  def forward_backward(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example = per_example_loss(labels, logits, num_classes, config.label_smoothing)
      # Mean over the global batch: summing replicas' losses gives the mean.
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
      scaled = optimizer.scale_loss(loss)
    return logits, per_example, tape.gradient(scaled, model.trainable_variables)

  # XLA compiles forward and backward into fused kernels; the gradient
  # all-reduce and the optimiser update stay outside, where tf.distribute's
  # cross-replica machinery runs.
  xla = config.use_xla(len(tf.config.list_logical_devices("GPU")))
  if xla and _cross_replica_forward(model, strategy):
    raise errors.ConfigError(
        f"--jit-compile {config.jit_compile} cannot compile --model {config.model} over "
        f"{strategy.num_replicas_in_sync} CPU replicas: its synchronised BatchNorm all-reduces "
        "inside the forward pass, which TensorFlow compiles with XLA only on GPUs. "
        "Use --jit-compile auto or off.")
  if xla:
    forward_backward = tf.function(forward_backward, jit_compile=True)

  def replica_train_step(images, labels):
    logits, per_example, grads = forward_backward(images, labels)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    train_sums.update(labels, logits, per_example)

  @tf.function
  def train_steps(iterator, steps, stop_flag):
    # First, every worker learns whether any of them got SIGTERM; if one did,
    # all of them skip the steps and stop at the same global step.
    flags = strategy.run(lambda: tf.identity(stop_flag))
    stop = strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)
    for _ in tf.range(tf.where(stop > 0, 0, steps)):
      strategy.run(replica_train_step, args=next(iterator))
    return stop

  def replica_eval_step(images, labels):
    # A replica whose shard has ended gets empty batches (`evaluate` below), and
    # oneDNN's convolutions, TensorFlow's CPU kernels on x86-64
    # (trainer/environment.py's prefer_onednn; TensorFlow's own default on CPUs
    # with VNNI or AMX), fail on a batch of no images in TensorFlow 2.21: the
    # fused Conv2D+ReLU passes its input's 3 channels on, and the next
    # convolution stops the run with "input depth must be evenly divisible by
    # filter depth: 3 vs 32" (tests/test_train.py, two replicas). Empty, the
    # batch scores nothing, so it skips the model. Evaluation is not training:
    # no BatchNorm all-reduce runs in the skipped branch.
    logits = tf.cond(tf.shape(images)[0] > 0, lambda: model(images, training=False),
                     lambda: tf.zeros([0, num_classes], tf.float32))
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    eval_sums.update(labels, logits, per_example)

  @tf.function
  def evaluate():
    # One pass, one batch at a time, as tf.distribute's DistributedDataset.reduce
    # makes it: a while loop on get_next_as_optional, which under
    # MultiWorkerMirroredStrategy counts the replicas with values across workers and
    # feeds empty batches to those whose shard has ended until every shard has
    # (tensorflow/python/distribute/input_lib.py: DistributedDataset.reduce,
    # DistributedIterator.get_next_as_optional).
    # Not `for batch in eval_data`: under the default strategy eval_data is a plain
    # tf.data.Dataset, and AutoGraph turns that loop into a Dataset.scan and a
    # Dataset.reduce (tensorflow/python/data/ops/dataset_autograph.py), so the
    # model runs as a tf.data function, measured at about half the speed: 4,700
    # against 7,900-9,300 images/s for the tutorial CNN at batch 64 on 2 AMD EPYC
    # Zen 3 cores.
    iterator = iter(eval_data)

    def body(batch):
      strategy.run(replica_eval_step, args=batch.get_value())
      return [iterator.get_next_as_optional()]

    tf.while_loop(lambda batch: batch.has_value(), body, [iterator.get_next_as_optional()],
                  parallel_iterations=1)

  @tf.function
  def barrier():
    # An all-reduce returns only once every worker has entered it.
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.ones([])), axis=None)

  return Steps(train_steps, evaluate, barrier, xla)
