"""Running loss, accuracy and confusion sums, kept per replica and summed on read."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


class Sums:
  """Running sums per replica, summed over all replicas and workers when read.

  ON_READ/SUM variables cost no communication per step: each replica adds
  locally, and reading them in cross-replica context performs one
  all-reduce. Every worker must therefore read at the same point.
  """

  def __init__(self, num_classes: int, confusion: bool):
    """A confusion matrix is kept only if `confusion`: reading it costs an
    all-reduce of num_classes^2 values, which training's logging does not need.
    """
    def var(shape):
      return tf.Variable(tf.zeros(shape), trainable=False,
                         synchronization=tf.VariableSynchronization.ON_READ,
                         aggregation=tf.VariableAggregation.SUM)
    self.num_classes = num_classes
    self.loss = var([])
    self.correct = var([])
    self.count = var([])
    self.confusion = var([num_classes, num_classes]) if confusion else None

  def _variables(self):
    return [v for v in (self.loss, self.correct, self.count, self.confusion) if v is not None]

  def update(self, labels, logits, per_example_loss):
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    self.loss.assign_add(tf.reduce_sum(per_example_loss))
    self.correct.assign_add(tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32)))
    self.count.assign_add(tf.cast(tf.size(labels), tf.float32))
    if self.confusion is not None:
      self.confusion.assign_add(tf.math.confusion_matrix(
          labels, predictions, num_classes=self.num_classes, dtype=tf.float32))

  def read_and_reset(self) -> dict[str, Any]:
    count = float(self.count.read_value())
    result = {
        "loss": float(self.loss.read_value()) / max(count, 1.0),
        "accuracy": float(self.correct.read_value()) / max(count, 1.0),
        "count": int(count),
    }
    if self.confusion is not None:
      result["confusion"] = self.confusion.read_value().numpy()
    for v in self._variables():
      v.assign(tf.zeros_like(v))
    return result
