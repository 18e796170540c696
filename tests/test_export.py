"""Export: round trip through the SavedModel TF Serving would load (each model), and safe publishing."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from trainer.data import pipeline as data
from trainer import export
from trainer import models as model_lib
from trainer.storage import api as storage

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), tuple(f"c{i}" for i in range(10)), 10, 10)
MNIST = data.DatasetInfo("mnist", (28, 28, 1), tuple(str(i) for i in range(10)), 10, 10)


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
  return buf.getvalue()


def _images(info, n=6, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *info.image_shape), dtype=np.uint8)


def _with_moving_statistics(model):
  """Gives every BatchNorm moving statistics far from its initial 0 and 1, so that an export
  normalising by the batch's statistics, or by the initial ones, would not match."""
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = layer.moving_mean.shape
      layer.moving_mean.assign(rng.normal(0.0, 0.5, shape).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
  return model


@pytest.fixture(scope="module", params=[(CIFAR, "tutorial"), (MNIST, "tutorial"), (CIFAR, "resnet20")],
                ids=["cifar10", "mnist", "cifar10-resnet20"])
def exported(request, tmp_path_factory):
  info, architecture = request.param
  keras.utils.set_random_seed(len(info.name))  # fixed weights: the argmax checks see no new ties
  model = _with_moving_statistics(model_lib.create_model(architecture, info.image_shape, 10))
  base = str(tmp_path_factory.mktemp("export") / info.name)
  version, paths = export.export(model, info, architecture, [base])
  return info, model, paths[0]


def test_both_signatures_match_the_in_memory_model(exported):
  info, model, path = exported
  loaded = tf.saved_model.load(path)
  images = _images(info)
  expected = tf.nn.softmax(model(images, training=False)).numpy()
  # With BatchNorm, training mode (the batch's statistics) answers differently: the
  # export must serve inference mode.
  # (On a copy: a training-mode call updates the moving statistics.)
  if model.name == "resnet20":
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    assert np.abs(tf.nn.softmax(copy(images, training=True)).numpy() - expected).max() > 1e-3

  out = loaded.signatures["serving_default"](images=tf.constant(images))
  np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(out["classes"].numpy(), expected.argmax(-1))
  assert out["class_names"].shape == (len(images), 10)
  assert [n.decode() for n in out["class_names"].numpy()[0]] == list(info.class_names)

  encoded = tf.constant([_png(i) for i in images])  # PNG is lossless: same pixels
  out = loaded.signatures["serving_encoded"](image_bytes=encoded)
  np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)


def test_encoded_signature_takes_jpeg_and_refuses_wrong_sizes(exported):
  info, _, path = exported
  fn = tf.saved_model.load(path).signatures["serving_encoded"]
  buf = io.BytesIO()
  image = _images(info, 1)[0]
  Image.fromarray(image[..., 0] if info.image_shape[2] == 1 else image).save(buf, format="JPEG")
  assert fn(image_bytes=tf.constant([buf.getvalue()]))["probabilities"].shape == (1, 10)
  wrong = np.zeros((40, 40, info.image_shape[2]), np.uint8)
  h, w, _ = info.image_shape
  with pytest.raises(tf.errors.InvalidArgumentError, match=f"must be {h}x{w} pixels"):
    fn(image_bytes=tf.constant([_png(wrong)]))
  with pytest.raises(tf.errors.InvalidArgumentError):
    fn(image_bytes=tf.constant([b"not an image"]))


def test_warmup_requests_replay_through_the_saved_model(exported):
  """TF Serving replays assets.extra/tf_serving_warmup_requests while loading a version,
  and a record that does not parse or fails fails the load (saved_model_warmup_util.cc):
  every record must be a valid request of a signature, at every batch size batching uses."""
  info, model, path = exported
  warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
  records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
             for r in tf.data.TFRecordDataset(warmup)]
  assert 0 < len(records) <= 1000  # WarmupConsts::kMaxNumRecords
  assert {r.WhichOneof("log_type") for r in records} == {"predict_log"}

  loaded = tf.saved_model.load(path)
  warmed = set()
  for record in records:
    request = record.predict_log.request
    signature = request.model_spec.signature_name
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    out = loaded.signatures[signature](**{name: tf.constant(v) for name, v in inputs.items()})
    if signature == "serving_default":
      images = inputs["images"]
    else:
      images = np.stack([tf.io.decode_png(b, channels=info.image_shape[2]).numpy()
                         for b in inputs["image_bytes"]])
    batch = len(images)
    assert images.shape == (batch, *info.image_shape) and images.dtype == np.uint8
    assert out["probabilities"].shape == (batch, 10) and out["classes"].shape == (batch,)
    assert out["class_names"].shape == (batch, 10)
    np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(model(images)).numpy(),
                               atol=1e-5)
    warmed.add((signature, batch))
  # Both signatures, at every batch size TF Serving's batching pads to.
  assert warmed == {(s, n) for s in ("serving_default", "serving_encoded")
                    for n in (1, 2, 4, 8, 16, 32, 64)}


def _cli_signatures(path):
  """Parses `saved_model_cli show --all`: {signature: {('inputs'|'outputs', name): (dtype, shape)}}."""
  # As a module of this interpreter: the `saved_model_cli` script is only on
  # PATH when this environment's bin/ is.
  text = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                         "--dir", path, "--all"], capture_output=True, text=True, check=True).stdout
  result = {}
  for block in re.split(r"\nsignature_def\['", text)[1:]:
    name = block.split("'", 1)[0]
    entries = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", block)
    result[name] = {(kind, n): (dtype, shape.strip()) for kind, n, dtype, shape in entries}
  return result


def test_signatures_as_tf_serving_reads_them(exported):
  info, _, path = exported
  h, w, c = info.image_shape
  sigs = _cli_signatures(path)
  outputs = {("outputs", "probabilities"): ("DT_FLOAT", "(-1, 10)"),
             ("outputs", "classes"): ("DT_INT64", "(-1)"),
             ("outputs", "class_names"): ("DT_STRING", "(-1, 10)")}
  assert sigs["serving_default"] == {("inputs", "images"): ("DT_UINT8", f"(-1, {h}, {w}, {c})"), **outputs}
  assert sigs["serving_encoded"] == {("inputs", "image_bytes"): ("DT_STRING", "(-1)"), **outputs}


def test_trained_export_matches_the_final_checkpoint(trained_job, tfds_dir):
  """The export of the real run serves exactly the weights training ended with."""
  config, metrics, job_dir = trained_job
  model = model_lib.create_model("tutorial", (32, 32, 3), 10)
  checkpoint = tf.train.Checkpoint(model=model)
  checkpoint.restore(tf.train.latest_checkpoint(os.path.join(job_dir, "checkpoints"))).expect_partial()
  source = data.load(config)
  images, labels = next(iter(source.read(False, None, 0).batch(64)))
  served = tf.saved_model.load(metrics["export"]["paths"][0]).signatures["serving_default"](images=images)
  np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(model(images)).numpy(), atol=1e-5)
  accuracy = np.mean(served["classes"].numpy() == labels.numpy())
  # A trained model's answers: on these 64 images, 0.75 at worst over 21 runs of the shared
  # job's training (seeds, ISAs: conftest.ACCURACY_BAR), 1.0 in most; chance is 0.1.
  assert accuracy >= 0.6


def test_versions_only_grow_and_every_base_gets_the_same_one(tmp_path):
  model = model_lib.create_model("tutorial", (28, 28, 1), 10)
  a, b = str(tmp_path / "job" / "mnist"), str(tmp_path / "published" / "mnist")
  os.makedirs(os.path.join(b, "7"))  # an older version already published elsewhere
  version, paths = export.export(model, MNIST, "tutorial", [a, b])
  assert version == 8 and paths == [os.path.join(a, "8"), os.path.join(b, "8")]
  assert export.export(model, MNIST, "tutorial", [a])[0] == 9
  assert storage.list_versions(a) == [8, 9]


def test_failed_publish_leaves_no_version_and_no_staging(tmp_path):
  src = tmp_path / "saved_model"
  (src / "variables").mkdir(parents=True)
  (src / "saved_model.pb").write_bytes(b"x")
  (src / "variables" / "variables.index").write_bytes(b"x")
  os.symlink(tmp_path / "missing", src / "variables" / "variables.data-00000-of-00001")
  base = tmp_path / "export" / "m"
  # copytree copies what it can, then raises one shutil.Error listing each
  # failure as (source, destination, reason).
  with pytest.raises(shutil.Error, match=r"variables\.data-00000-of-00001.*No such file or directory") as e:
    storage.publish_version(str(src), str(base), 1)
  assert [failed for failed, _, _ in e.value.args[0]] == [
      str(src / "variables" / "variables.data-00000-of-00001")]
  assert os.listdir(base) == []  # neither "1" nor a staging directory


def test_publish_never_overwrites_a_version(tmp_path):
  src = tmp_path / "sm"
  src.mkdir()
  (src / "saved_model.pb").write_bytes(b"new")
  base = tmp_path / "m"
  (base / "1").mkdir(parents=True)
  (base / "1" / "saved_model.pb").write_bytes(b"old")
  with pytest.raises(FileExistsError):
    storage.publish_version(str(src), str(base), 1)
  assert (base / "1" / "saved_model.pb").read_bytes() == b"old"


def test_sweep_removes_only_stale_staging_directories(tmp_path):
  src = tmp_path / "sm"
  src.mkdir()
  (src / "saved_model.pb").write_bytes(b"pb")
  base = tmp_path / "m"
  stale, busy = base / ".staging-1-dead", base / ".staging-2-busy"
  stale.mkdir(parents=True)
  busy.mkdir()
  old = os.path.getmtime(stale) - storage.STALE_STAGING_S - 60
  os.utime(stale, (old, old))
  assert storage.sweep(str(base)) == [str(stale)]
  storage.publish_version(str(src), str(base), 3)
  assert sorted(os.listdir(base)) == [".staging-2-busy", "3"]  # another publisher's copy survives


def _leftover(base, name, job_dir, age_s=0.0):
  """An incomplete version or staging directory: variables and run info, no saved_model.pb."""
  path = base / name
  (path / "variables").mkdir(parents=True)
  (path / "variables" / "variables.index").write_bytes(b"x")
  (path / "assets.extra").mkdir()
  (path / "assets.extra" / "trainer_run.json").write_text(json.dumps({"job_dir": job_dir}))
  if age_s:
    old = time.time() - age_s
    for p in [path, *path.rglob("*")]:
      os.utime(p, (old, old))
  return path


def test_sweep_removes_incomplete_versions_of_this_job_or_stale_ones(tmp_path, caplog):
  base = tmp_path / "m"
  (base / "1").mkdir(parents=True)
  (base / "1" / "saved_model.pb").write_bytes(b"pb")  # complete: never swept
  _leftover(base, "2", "/jobs/other")  # young, another job's: may be in progress
  _leftover(base, "3", "/jobs/other", age_s=storage.STALE_STAGING_S + 60)
  _leftover(base, "4", "/jobs/a")  # this job's earlier attempt, however young
  _leftover(base, ".staging-5-abcd", "/jobs/a")
  caplog.set_level("INFO")
  assert storage.sweep(str(base), job_dir="/jobs/a") == [
      str(base / ".staging-5-abcd"), str(base / "3"), str(base / "4")]
  assert sorted(os.listdir(base)) == ["1", "2"]
  assert f"Sweeping {base / '3'}: stale" in caplog.text
  assert f"Sweeping {base / '4'}: left by an earlier attempt of this job (/jobs/a)" in caplog.text


def test_export_sweeps_its_own_incomplete_version_and_publishes_it_again(tmp_path):
  model = model_lib.create_model("tutorial", (28, 28, 1), 10)
  base = tmp_path / "published" / "mnist"
  _leftover(base, "1", "/jobs/a")
  run_info = {"job_dir": "/jobs/a", "global_step": 3, "weights_sha256": "abc"}
  assert export.export(model, MNIST, "tutorial", [str(base)], run_info=run_info)[0] == 1
  assert os.path.isfile(base / "1" / "saved_model.pb")
  assert os.listdir(base) == ["1"]


def test_an_incomplete_version_is_never_reused_as_this_state(tmp_path):
  """Its run info matches the state, but without saved_model.pb it proves nothing."""
  model = model_lib.create_model("tutorial", (28, 28, 1), 10)
  job, other = tmp_path / "job" / "mnist", tmp_path / "published" / "mnist"
  run_info = {"job_dir": "/jobs/a", "global_step": 3, "weights_sha256": "abc"}
  path = _leftover(job, "1", "/jobs/b")  # young and another job's: the sweep keeps it
  (path / "assets.extra" / "trainer_run.json").write_text(json.dumps({**run_info, "job_dir": "/jobs/b"}))
  version, _ = export.export(model, MNIST, "tutorial", [str(job), str(other)], run_info=run_info)
  assert version == 2
  assert os.listdir(other) == ["2"]


def test_the_export_serves_the_pixel_range_the_model_was_trained_with(tmp_path):
  """A model trained on [-1, 1] pixels (preset cifar10-best) is served on [-1, 1]: the copy
  for serving reads the range off the trained model, not a default."""
  keras.utils.set_random_seed(3)
  model = model_lib.create_model("tutorial", CIFAR.image_shape, 10, pixel_range="symmetric")
  _, (path,) = export.export(model, CIFAR, "tutorial", [str(tmp_path / "cifar10")])
  images = _images(CIFAR)
  served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
  expected = tf.nn.softmax(model(images, training=False)).numpy()
  np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
  # The same weights on [0, 1] pixels answer differently: the check above can fail.
  unit = model_lib.create_model("tutorial", CIFAR.image_shape, 10, pixel_range="unit")
  unit.set_weights(model.get_weights())
  assert np.abs(tf.nn.softmax(unit(images, training=False)).numpy() - expected).max() > 1e-3
