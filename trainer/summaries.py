"""What a training run writes to TensorBoard.

Two runs under JOB_DIR/logs: `train` (loss, accuracy, learning rate and
images/s every --log-every-steps steps, and the model graph) and `eval` (loss,
accuracy and images/s every epoch; the confusion matrix and a predictions grid
as images, and their content as text tables, when the loop asks for them).
Only the chief writes: other workers get no-op writers, so callers need no
chief checks of their own.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer import reporting


class Summaries:
  """The train and eval summary writers of one run."""

  def __init__(self, train_dir: str, eval_dir: str, is_chief: bool,
               class_names: tuple[str, ...]):
    self.is_chief = is_chief
    self.class_names = class_names
    if is_chief:
      self._train = tf.summary.create_file_writer(train_dir)
      self._eval = tf.summary.create_file_writer(eval_dir)
    else:
      self._train = self._eval = tf.summary.create_noop_writer()

  def graph(self, model, image_shape: tuple[int, int, int]) -> None:
    """The model's inference graph, for TensorBoard's Graphs tab."""
    if not self.is_chief:
      return
    spec = tf.TensorSpec([None, *image_shape], tf.uint8, name="images")
    graph = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec).graph
    with self._train.as_default():
      tf.summary.graph(graph)

  def train_scalars(self, step: int, loss: float, accuracy: float, learning_rate: float,
                    images_per_sec: float) -> None:
    with self._train.as_default(step=step):
      tf.summary.scalar("loss", loss)
      tf.summary.scalar("accuracy", accuracy)
      tf.summary.scalar("learning_rate", learning_rate)
      tf.summary.scalar("images_per_sec", images_per_sec)

  def eval_scalars(self, step: int, loss: float, accuracy: float, images_per_sec: float) -> None:
    with self._eval.as_default(step=step):
      tf.summary.scalar("loss", loss)
      tf.summary.scalar("accuracy", accuracy)
      tf.summary.scalar("images_per_sec", images_per_sec)

  def eval_pictures(self, step: int, confusion: np.ndarray, images: np.ndarray,
                    labels: np.ndarray, predictions: np.ndarray) -> None:
    """The confusion matrix and a predictions grid, as images and as text tables.

    Text tags differ from image tags: TensorBoard gives each tag of a run to one plugin.
    """
    if not self.is_chief:
      return  # drawing costs ~0.7 s of CPU, for nothing on a no-op writer
    names = self.class_names
    with self._eval.as_default(step=step):
      tf.summary.image("confusion_matrix", reporting.confusion_matrix_image(confusion, names))
      tf.summary.text("confusion_counts", reporting.confusion_matrix_table(confusion, names))
      tf.summary.image("predictions", reporting.predictions_image(images, labels, predictions, names))
      tf.summary.text("prediction_titles", reporting.predictions_table(labels, predictions, names))

  def flush(self) -> None:
    self._train.flush()
    self._eval.flush()
