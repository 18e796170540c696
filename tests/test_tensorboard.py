"""TensorBoard: the real server reads the run's scalars, images and graph over HTTP."""

import io
import re

import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image

from conftest import NUM_TEST
import tensorboard_server
from trainer.data import pipeline as data
from trainer.data import synthetic

SCALARS = {"loss", "accuracy", "learning_rate", "images_per_sec"}


@pytest.fixture(scope="module")
def tensorboard(trained_job):
  _, _, job_dir = trained_job

  def both_runs_listed(url):
    tags = requests.get(f"{url}/data/plugin/scalars/tags", timeout=5).json()
    return {"logs/train", "logs/eval"} <= set(tags)

  with tensorboard_server.serve(job_dir, both_runs_listed) as url:
    yield url


def test_scalar_tags_for_train_and_eval(tensorboard):
  tags = requests.get(f"{tensorboard}/data/plugin/scalars/tags", timeout=10).json()
  assert SCALARS <= set(tags["logs/train"])
  assert {"loss", "accuracy", "images_per_sec"} <= set(tags["logs/eval"])


def test_training_curve_goes_the_right_way(tensorboard, trained_job):
  def series(run, tag):
    return requests.get(f"{tensorboard}/data/plugin/scalars/scalars",
                        params={"run": run, "tag": tag}, timeout=10).json()
  loss = series("logs/train", "loss")
  accuracy = series("logs/eval", "accuracy")
  assert loss[-1][2] < loss[0][2] / 2  # [wall_time, step, value]
  # Every --log-every-steps (5) global steps: 15 steps per epoch, so 3 per epoch.
  assert [point[1] for point in loss] == list(range(5, 15 * trained_job[0].epochs + 1, 5))
  assert len(accuracy) == trained_job[0].epochs
  assert accuracy[-1][2] == pytest.approx(trained_job[1]["test_accuracy"], abs=1e-6)


def _eval_text_table(tensorboard, tag):
  """(step, rows of cell strings) of the last text summary `tag`, as TensorBoard renders it."""
  entries = requests.get(f"{tensorboard}/data/plugin/text/text",
                         params={"run": "logs/eval", "tag": tag}, timeout=10).json()
  html = entries[-1]["text"]
  rows = [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)]
          for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)]
  return entries[-1]["step"], rows


def _last_image(tensorboard, tag):
  entries = requests.get(f"{tensorboard}/data/plugin/images/images",
                         params={"run": "logs/eval", "tag": tag}, timeout=10).json()
  png = requests.get(f"{tensorboard}/data/plugin/images/individualImage?{entries[-1]['query']}",
                     timeout=10).content
  return entries[-1]["step"], np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_confusion_matrix_counts_add_up_to_the_test_set(tensorboard, trained_job):
  _, metrics, _ = trained_job
  names = list(synthetic.CLASS_NAMES["cifar10"])
  step, rows = _eval_text_table(tensorboard, "confusion_counts")
  assert step == metrics["global_step"]
  assert rows[0] == ["true / predicted", *names] and [row[0] for row in rows[1:]] == names
  counts = np.array([[int(cell) for cell in row[1:]] for row in rows[1:]])
  assert counts.sum() == NUM_TEST
  assert np.trace(counts) / NUM_TEST == pytest.approx(metrics["test_accuracy"])
  for i, name in enumerate(names):
    assert counts[i, i] / counts[i].sum() == pytest.approx(metrics["per_class_accuracy"][name])
  # The picture of it: a 7.5 x 7.5 inch figure at 100 dpi for 10 classes, and not blank.
  image_step, image = _last_image(tensorboard, "confusion_matrix")
  assert image_step == step and image.shape == (750, 750, 3) and image.std() > 10


def test_prediction_titles_name_the_true_and_the_predicted_class(tensorboard, trained_job):
  config, metrics, _ = trained_job
  names = synthetic.CLASS_NAMES["cifar10"]
  step, rows = _eval_text_table(tensorboard, "prediction_titles")
  assert step == metrics["global_step"]
  assert rows[0] == ["image", "true", "predicted"]
  # The grid's images: the first 20 of the test split, predicted by the final model.
  images, labels = next(iter(data.load(config).read(False, None, config.seed).take(20).batch(20)))
  served = tf.saved_model.load(metrics["export"]["paths"][0]).signatures["serving_default"]
  predicted = served(images=images)["classes"].numpy()
  assert rows[1:] == [[str(k), names[label], names[prediction]]
                      for k, (label, prediction) in enumerate(zip(labels.numpy(), predicted))]
  # A 5 x 4 grid of 2.0 x 2.2 inch cells at 100 dpi.
  image_step, image = _last_image(tensorboard, "predictions")
  assert image_step == step and image.shape == (880, 1000, 3) and image.std() > 10


def test_model_graph(tensorboard):
  info = requests.get(f"{tensorboard}/data/plugin/graphs/info", timeout=10).json()
  assert info["logs/train"]["run_graph"]
  graph = requests.get(f"{tensorboard}/data/plugin/graphs/graph", params={"run": "logs/train"},
                       timeout=10).text
  assert "Conv2D" in graph


def test_a_picture_is_the_pixels_matplotlib_would_save_as_png():
  """The Agg buffer read directly (trainer/telemetry/reporting.py) is the PNG's content."""
  from trainer.telemetry import reporting  # pylint: disable=import-outside-toplevel
  fig = reporting._figure(3, 2)  # pylint: disable=protected-access
  ax = fig.subplots()
  ax.imshow(np.arange(12).reshape(3, 4), cmap="Blues")
  ax.set_title("true / predicted")
  fig.tight_layout()
  drawn = reporting._figure_to_rgba(fig)  # pylint: disable=protected-access
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  saved = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGBA"))[np.newaxis]
  assert drawn.shape == saved.shape == (1, 200, 300, 4) and drawn.dtype == np.uint8
  assert np.array_equal(drawn, saved)
