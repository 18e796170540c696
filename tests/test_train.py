"""End to end: real TFDS / image-folder data, real training, under each strategy."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import ACCURACY_BAR, EPOCHS_TO_LEARN, NUM_TEST, make_config
from trainer import presets
from trainer import models as model_lib
from trainer.data import pipeline as data
from trainer.data import synthetic
from trainer.training import metrics as metrics_lib
from trainer.training import steps as steps_lib
from trainer.training import train


def test_default_strategy_learns_and_fills_the_job_dir(trained_job):
  config, metrics, job_dir = trained_job
  assert metrics["test_accuracy"] >= ACCURACY_BAR, metrics
  assert metrics["test_examples"] == NUM_TEST
  assert metrics["epochs"] == EPOCHS_TO_LEARN
  assert metrics["train_images_per_sec"] > 0
  on_disk = json.load(open(os.path.join(job_dir, "metrics.json")))
  assert on_disk["test_accuracy"] == metrics["test_accuracy"]
  assert set(on_disk["per_class_accuracy"]) == {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
  assert on_disk["export"]["version"] == 1
  assert os.path.isfile(os.path.join(job_dir, "export", "cifar10", "1", "saved_model.pb"))
  written = json.load(open(os.path.join(job_dir, "config.json")))
  assert written["batch_size"] == config.batch_size
  # --learning-rate at batch 32, scaled by sqrt(128 / 32) = 2 for the global batch of 128.
  assert written["resolved"]["effective_learning_rate"] == pytest.approx(2 * config.learning_rate)
  checkpoints = tf.train.get_checkpoint_state(os.path.join(job_dir, "checkpoints"))
  assert len(checkpoints.all_model_checkpoint_paths) == config.keep_checkpoints
  for run in ("train", "eval"):
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(job_dir, "logs", run)))


def test_mirrored_strategy_over_two_cpus_learns(tfds_dir, tmp_path):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  assert strategy.num_replicas_in_sync == 2
  metrics = train.run(make_config(tfds_dir, str(tmp_path)), strategy=strategy)
  assert metrics["replicas"] == 2
  assert metrics["test_examples"] == NUM_TEST  # eval split across replicas, counted once
  assert metrics["test_accuracy"] >= ACCURACY_BAR, metrics


@pytest.mark.parametrize("devices", [None, ["/cpu:0", "/cpu:1"]], ids=["one-replica", "two-replicas"])
def test_one_evaluation_pass_scores_every_eval_image_once_as_the_model_does(devices):
  """150 images at global batch 64, through the run's own eval pipeline: the last batch is
  partial, and over two replicas (32 each) the second replica's last step has no images.
  The sums must equal the model's own scores of all 150, each counted once."""
  strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
  images, labels = synthetic.make_arrays(150, (32, 32, 3), seed=3)
  info = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 150, 150)
  source = data.ArraySource(info, (images, labels), (images, labels))
  config = presets.preset("cifar10", batch_size=64)
  with strategy.scope():
    model = model_lib.create_model("tutorial", (32, 32, 3), 10)
    sums = metrics_lib.Sums(10, confusion=True)
  eval_data = strategy.distribute_datasets_from_function(
      lambda ctx: data.eval_dataset(source, config, ctx))
  steps_lib.build(model, None, strategy, config, 10, None, sums, eval_data).evaluate()
  got = sums.read_and_reset()

  logits = model(images, training=False).numpy()
  predictions = logits.argmax(axis=-1)
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy()
  assert got["count"] == 150
  assert got["loss"] == pytest.approx(losses.mean(), rel=1e-5)
  assert got["accuracy"] == pytest.approx((predictions == labels).mean(), abs=1e-9)
  expected = np.zeros((10, 10))
  np.add.at(expected, (labels, predictions), 1)
  np.testing.assert_array_equal(got["confusion"], expected)


def test_image_folder_learns(image_folder, tmp_path):
  config = presets.preset(
      "cifar10", dataset=f"folder:{image_folder}", job_dir=str(tmp_path), epochs=6,
      batch_size=32, log_every_steps=5, steps_per_execution=5)
  metrics = train.run(config)
  assert metrics["test_accuracy"] >= ACCURACY_BAR, metrics
  name = os.path.basename(image_folder)
  assert os.path.isdir(os.path.join(tmp_path, "export", name, "1"))


def test_rerun_of_finished_job_neither_trains_nor_exports(trained_job, caplog):
  config, metrics, job_dir = trained_job
  caplog.set_level("INFO")
  with open(os.path.join(job_dir, "metrics.json"), encoding="utf-8") as f:
    recorded = f.read()
  again = train.run(config)
  assert again["export"]["version"] == metrics["export"]["version"]
  assert os.listdir(os.path.join(job_dir, "export", "cifar10")) == ["1"]
  assert "Job already complete" in caplog.text
  # What the finished run recorded, returned as it was: no step ran, nothing was rewritten.
  assert again == json.loads(recorded)
  with open(os.path.join(job_dir, "metrics.json"), encoding="utf-8") as f:
    assert f.read() == recorded


def test_batch_larger_than_dataset_is_refused(tfds_dir, tmp_path):
  from trainer import errors
  with pytest.raises(errors.ConfigError, match="larger than the 2000 training examples"):
    train.run(make_config(tfds_dir, str(tmp_path), batch_size=4096))


def test_bfloat16_learns_and_exports_float32(tfds_dir, tmp_path):
  """The GPU path's numerics, run on the CPU: in oneDNN's bfloat16 kernels on CPUs with AVX-512,
  in TensorFlow's own (slower) ones elsewhere; the bar's spread was measured on both
  (tests/conftest.py)."""
  metrics = train.run(make_config(tfds_dir, str(tmp_path), mixed_precision="bfloat16"))
  assert metrics["test_accuracy"] >= ACCURACY_BAR, metrics
  served = tf.saved_model.load(metrics["export"]["paths"][0]).signatures["serving_default"]
  assert served.structured_outputs["probabilities"].dtype == tf.float32


def test_float16_trains_with_loss_scaling(tfds_dir, tmp_path, caplog):
  """float16 convolutions are emulated on CPUs (~5 s a step here): two steps prove the
  loss-scaled path runs and stays finite; accuracy is bfloat16's test's job."""
  caplog.set_level("INFO", logger="trainer.training")
  config = make_config(tfds_dir, str(tmp_path), mixed_precision="float16", epochs=1, batch_size=64,
                       train_split="train[:128]", eval_split="test[:64]", log_every_steps=1,
                       steps_per_execution=1)
  metrics = train.run(config)
  losses = [float(x) for x in re.findall(r"step \d+/2: loss ([\d.naninf]+)", caplog.text)]
  assert len(losses) == 2 and all(np.isfinite(losses)), caplog.text
  assert np.isfinite(metrics["test_loss"])
  served = tf.saved_model.load(metrics["export"]["paths"][0]).signatures["serving_default"]
  assert served.structured_outputs["probabilities"].dtype == tf.float32
