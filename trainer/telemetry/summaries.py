"""What a training run writes to TensorBoard.

Two runs under JOB_DIR/logs: `train` (loss, accuracy, learning rate and
images/s every --log-every-steps steps, and the model graph) and `eval` (loss,
accuracy and images/s every epoch; the confusion matrix and a predictions grid
as images, and their content as text tables, when `pictures_due` says so).
Only the chief writes: other workers get no-op writers, and are never due
pictures, so callers need no chief checks of their own.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from trainer.telemetry import reporting

# Drawing the two evaluation pictures takes ~0.7 s of CPU, a lot next to a
# one-second GPU epoch: draw them at the final evaluation and otherwise at
# most once per this many seconds of training (~1% of the time).
PICTURE_INTERVAL_S = 60.0


class Summaries:
  """The train and eval summary writers of one run."""

  def __init__(self, train_dir: str, eval_dir: str, is_chief: bool,
               class_names: tuple[str, ...]):
    self.is_chief = is_chief
    self.class_names = class_names
    self._pictures_drawn = time.time()  # when the evaluation pictures were last due
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

  def pictures_due(self, final: bool) -> bool:
    """Whether to draw the evaluation pictures now (and, if so, counts them as drawn).

    On the chief at the final evaluation, and otherwise once per
    PICTURE_INTERVAL_S; never on other workers, which would draw for a no-op
    writer.
    """
    if not self.is_chief or not (final or time.time() - self._pictures_drawn >= PICTURE_INTERVAL_S):
      return False
    self._pictures_drawn = time.time()
    return True

  def eval_pictures(self, step: int, confusion: np.ndarray, images: np.ndarray,
                    labels: np.ndarray, predictions: np.ndarray) -> None:
    """The confusion matrix and a predictions grid, as images and as text tables.

    Call when `pictures_due`. Text tags differ from image tags: TensorBoard
    gives each tag of a run to one plugin.
    """
    names = self.class_names
    with self._eval.as_default(step=step):
      tf.summary.image("confusion_matrix", reporting.confusion_matrix_image(confusion, names))
      tf.summary.text("confusion_counts", reporting.confusion_matrix_table(confusion, names))
      tf.summary.image("predictions", reporting.predictions_image(images, labels, predictions, names))
      tf.summary.text("prediction_titles", reporting.predictions_table(labels, predictions, names))

  def flush(self) -> None:
    self._train.flush()
    self._eval.flush()

  def close(self) -> None:
    """Flushes and closes both writers: what was logged is on disk before the process exits."""
    self._train.close()
    self._eval.close()
