"""TensorBoard: the real server reads the run's scalars, images and graph over HTTP."""

import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from conftest import free_port

SCALARS = {"loss", "accuracy", "learning_rate", "images_per_sec"}


@pytest.fixture(scope="module")
def tensorboard(trained_job):
  _, _, job_dir = trained_job
  port = free_port()
  exe = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable), "tensorboard")
  proc = subprocess.Popen([exe, "--logdir", job_dir, "--host", "127.0.0.1", "--port", str(port),
                           "--reload_interval", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 90
  try:
    while time.time() < deadline:
      assert proc.poll() is None, proc.stderr.read()
      try:
        tags = requests.get(f"{url}/data/plugin/scalars/tags", timeout=5).json()
        if {"logs/train", "logs/eval"} <= set(tags):
          break
      except requests.ConnectionError:
        pass
      time.sleep(0.5)
    else:
      pytest.fail("TensorBoard did not list the runs within 90 s")
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=30)


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


def test_confusion_matrix_and_prediction_images(tensorboard):
  tags = requests.get(f"{tensorboard}/data/plugin/images/tags", timeout=10).json()
  assert {"confusion_matrix", "predictions"} <= set(tags["logs/eval"])
  entries = requests.get(f"{tensorboard}/data/plugin/images/images",
                         params={"run": "logs/eval", "tag": "confusion_matrix"}, timeout=10).json()
  png = requests.get(f"{tensorboard}/data/plugin/images/individualImage?{entries[-1]['query']}",
                     timeout=10)
  assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_graph(tensorboard):
  info = requests.get(f"{tensorboard}/data/plugin/graphs/info", timeout=10).json()
  assert info["logs/train"]["run_graph"]
  graph = requests.get(f"{tensorboard}/data/plugin/graphs/graph", params={"run": "logs/train"},
                       timeout=10).text
  assert "Conv2D" in graph
