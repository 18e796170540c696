"""Export: the SavedModel TF Serving loads.

Signatures (names, dtypes and shapes are the serving contract; tests check
them with `saved_model_cli show --all`):

  serving_default(images: uint8 [batch, H, W, C])
  serving_encoded(image_bytes: string [batch])   PNG/JPEG/GIF/BMP file bytes;
                                                 REST clients send {"b64": ...}
    -> probabilities: float32 [batch, num_classes]   softmax of the logits
       classes:       int64   [batch]                 argmax
       class_names:   string  [batch, num_classes]    name of class i at [:, i]

`class_names` makes the model self-describing, so a client needs no label list
that could drift from the training data (the convention of TF's classification
signature). Encoded images must already have the model's size; the server
returns INVALID_ARGUMENT naming the expected size rather than resizing quietly.

Every version carries `assets.extra/tf_serving_warmup_requests` (see
`write_warmup_requests`): TF Serving replays those requests while loading the
version, so the first user request pays no start-up cost.

The model is exported through `keras.export.ExportArchive`, the Keras 3 route
to a SavedModel with explicit signatures (`Model.save` refuses SavedModel
directories and `tf.saved_model.save` renames Keras 3 inputs). It is written
to a local temporary directory and then published (`storage.publish_version`)
so no partially written version is ever visible to a server polling the path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from trainer import models as model_lib
from trainer.storage import api as storage
from trainer.storage import versions
from trainer.data.pipeline import DatasetInfo

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "serving_encoded"
# Written into the SavedModel's assets.extra/; TF Serving reads only
# WARMUP_FILE there and ignores this one. Its `job_dir` lets a publish sweep
# recognise this job's own leftovers (storage.sweep).
RUN_INFO_FILE = versions.RUN_INFO_FILE

# TF Serving's warm-up file, in assets.extra/, and its limits, from
# tensorflow_serving/servables/tensorflow/saved_model_warmup_util.{h,cc}
# (WarmupConsts): a TFRecord file of PredictionLog; more than 1000 records, a
# record that does not parse, or a request that fails makes the whole
# version's load fail. saved_model_warmup.cc (RunWarmupRequest) replays
# predict, classify, regress and multi_inference logs; we write predict logs.
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
# Batch sizes to warm, per signature: serving/batching_parameters.txt's
# allowed_batch_sizes. k8s/serving.yaml runs TF Serving with --enable_batching,
# which wraps the session for batching before warm-up runs
# (saved_model_bundle_factory.cc), so every batch is padded to one of these
# sizes and each size is a distinct shape with its own one-off start-up cost.
# Warm-up runs one request at a time, so a request of exactly an allowed size
# reaches the model at that size. A copy rather than a read of the packaged
# file at export time: the trainer then needs neither the serving package nor
# the BatchingParameters proto (which tensorflow-serving-api does not ship),
# and tests/test_serving_config.py fails if the two ever differ.
WARMUP_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
# Warm-up needs only the right shapes and dtypes; mid-grey is a plausible image.
WARMUP_PIXEL = 128


def serving_model(trained: keras.Model, architecture: str, info: DatasetInfo) -> keras.Model:
  """A float32 copy of `trained` built outside any distribution strategy.

  Mixed-precision training keeps float32 variables, so the weights copy over
  unchanged; the copy serves in float32 on any CPU or GPU and carries no
  distributed-variable wrappers into the SavedModel.
  """
  # The pixel range is read off the trained model itself, so that serving
  # cannot scale pixels differently from training.
  copy = model_lib.create_model(architecture, info.image_shape, info.num_classes, "off",
                                model_lib.pixel_range_of(trained))
  copy.set_weights(trained.get_weights())
  return copy


def write_saved_model(model: keras.Model, info: DatasetInfo, path: str,
                      run_info: Optional[dict] = None) -> None:
  """Writes `model` as a SavedModel with the two serving signatures to `path`.

  assets.extra/ gets the run info (`run_info` plus the class names and image
  shape) and TF Serving's warm-up requests (`write_warmup_requests`).
  """
  h, w, c = info.image_shape
  names = tf.constant(list(info.class_names))

  def outputs(images):
    logits = model(images, training=False)
    batch = tf.shape(logits)[0]
    return {
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
        "class_names": tf.broadcast_to(names[tf.newaxis, :], [batch, info.num_classes]),
    }

  def serve(images):
    return outputs(images)

  def decode(image_bytes):
    image = tf.io.decode_image(image_bytes, channels=c, dtype=tf.uint8, expand_animations=False)
    size = tf.shape(image)[:2]

    def wrong_size():
      failed = tf.debugging.Assert(False, [
          f"each encoded image must be {h}x{w} pixels (height x width); got", size,
          "- resize it first"])
      with tf.control_dependencies([failed]):
        return tf.zeros([h, w, c], tf.uint8)

    # The check selects the value, so nothing downstream can run before it
    # (a bare control dependency let ensure_shape fail first, with a message
    # that names no expected size).
    image = tf.cond(tf.reduce_all(tf.equal(size, [h, w])), lambda: image, wrong_size)
    return tf.ensure_shape(image, [h, w, c])

  def serve_encoded(image_bytes):
    images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8))
    return outputs(images)

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(DEFAULT_SIGNATURE, serve,
                       input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
  archive.add_endpoint(ENCODED_SIGNATURE, serve_encoded,
                       input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  archive.write_out(path, verbose=False)
  extra = os.path.join(path, "assets.extra")
  os.makedirs(extra, exist_ok=True)
  with open(os.path.join(extra, RUN_INFO_FILE), "w", encoding="utf-8") as f:
    json.dump({**(run_info or {}), "class_names": list(info.class_names),
               "image_shape": list(info.image_shape)}, f, indent=2)
  # Written here, into the local directory `export` publishes, so the file is
  # in place before the version becomes visible: locally the version appears
  # by one rename, on GCS saved_model.pb is copied last (storage.publish_version).
  write_warmup_requests(info, os.path.join(extra, WARMUP_FILE))


def warmup_requests(info: DatasetInfo) -> list[prediction_log_pb2.PredictionLog]:
  """TF Serving warm-up records: both signatures at every batch size TF Serving batches to.

  Returns:
    For each signature (serving_default with uint8 pixels, serving_encoded
    with PNG bytes), one predict log per `WARMUP_BATCH_SIZES` entry, holding
    that many mid-grey images of the model's input size.
  """
  h, w, c = info.image_shape
  pixels = np.full([h, w, c], WARMUP_PIXEL, np.uint8)
  png = tf.io.encode_png(pixels).numpy()
  return ([_predict_log(DEFAULT_SIGNATURE, "images", np.broadcast_to(pixels, [n, h, w, c]))
           for n in WARMUP_BATCH_SIZES] +
          [_predict_log(ENCODED_SIGNATURE, "image_bytes", np.array([png] * n, dtype=object))
           for n in WARMUP_BATCH_SIZES])


def _predict_log(signature: str, input_name: str,
                 value: np.ndarray) -> prediction_log_pb2.PredictionLog:
  request = predict_pb2.PredictRequest()
  # model_spec.name stays empty: the version may be served under any name, and
  # predict_util.cc uses the name only to echo it in the response and to label
  # the request-latency metric, which warm-up should stay out of.
  request.model_spec.signature_name = signature
  request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(info: DatasetInfo, path: str) -> None:
  """Writes `warmup_requests(info)` to `path` as the TFRecord file TF Serving reads.

  Raises:
    ValueError: more records than TF Serving accepts, which would fail every load.
  """
  logs = warmup_requests(info)
  if len(logs) > MAX_WARMUP_RECORDS:
    raise ValueError(f"{len(logs)} warm-up records; TF Serving refuses more than "
                     f"{MAX_WARMUP_RECORDS}")
  with tf.io.TFRecordWriter(path) as writer:
    for log_record in logs:
      writer.write(log_record.SerializeToString())


def export(model: keras.Model, info: DatasetInfo, architecture: str, bases: list[str],
           run_info: Optional[dict] = None,
           model_dir: Optional[str] = None) -> tuple[int, list[str]]:
  """Exports `model` (of `config.model` architecture) as a new version under each base.

  Args:
    model: the trained model, possibly holding distributed variables.
    info: the data it was trained on.
    architecture: `config.model`, to rebuild the model for serving.
    bases: model base paths (…/export/<model-name>, PUBLISH_DIR/<model-name>).
      bases[0] belongs to this job alone (its job directory).
    run_info: provenance recorded in the SavedModel's assets.extra/; its
      `global_step` and `weights_sha256` identify the training state exported.
    model_dir: Vertex AI's AIP_MODEL_DIR: the same SavedModel is also written
      at its root, replacing what is there (`storage.replace_dir`), because
      Vertex AI's model import wants saved_model.pb there, not in a version.

  All bases get the same version number: one more than the highest version
  under any of them, so versions only grow. If the latest version in bases[0]
  already holds this training state (the process died after exporting but
  before metrics.json was written, and the rerun exports again), that version
  is reused and published only where it is missing: a rerun never publishes
  the same model twice.

  Before any of that, each base is swept (`storage.sweep`): staging and
  incomplete version directories of publishers killed mid-copy are deleted
  when stale, or at once when `run_info["job_dir"]` shows they are this job's.

  Returns:
    (version, the version paths, one per base).
  """
  job_dir = (run_info or {}).get("job_dir")
  for base in bases:
    storage.sweep(base, job_dir)
  version = _version_of_this_state(bases[0], run_info)
  published = {base: storage.list_versions(base) for base in bases[1:]}
  if version is not None:
    # Another training's version of that number, or newer ones, under a
    # publish base (a new --publish-dir shared with other jobs): publishing
    # this state as `version` there would skip it (the number is taken) or put
    # it below what TF Serving serves. Then it is a new version everywhere.
    clash = [base for base, numbers in published.items()
             if (version in numbers and not _holds_state(base, version, run_info))
             or (version not in numbers and numbers and numbers[-1] > version)]
    if clash:
      log.info("Version %d in %s already holds this training state, but %s holds version %d or "
               "a later one of another training: exporting it as a new version everywhere.",
               version, bases[0], ", ".join(clash), version)
      version = None
  if version is None:
    version, targets = storage.next_version(bases), bases
  else:
    targets = [base for base, numbers in published.items() if version not in numbers]
    log.info("Version %d in %s already holds this training state (global step %s): "
             "reusing it%s.", version, bases[0], run_info["global_step"],
             f", publishing it to {', '.join(targets)}" if targets else "")
  if targets or model_dir:
    serving = serving_model(model, architecture, info)
    staging = tempfile.mkdtemp(prefix="trainer-export-")
    try:
      local = os.path.join(staging, "saved_model")
      write_saved_model(serving, info, local, run_info)
      for base in targets:
        path = storage.publish_version(local, base, version)
        log.info("Exported SavedModel version %d to %s", version, path)
      if model_dir:
        path = storage.replace_dir(local, model_dir)
        log.info("Exported SavedModel version %d to %s (saved_model.pb at the root, for "
                 "Vertex AI model import)", version, path)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return version, [storage.join(base, str(version)) for base in bases]


def _version_of_this_state(base: str, run_info: Optional[dict]) -> Optional[int]:
  """The latest version under `base` if it is complete and its run info records the same
  step and weights."""
  if not run_info:
    return None
  numbers = storage.list_versions(base)
  if not numbers or not _holds_state(base, numbers[-1], run_info):
    return None
  return numbers[-1]


def _holds_state(base: str, version: int, run_info: dict) -> bool:
  """Whether version `version` under `base` is complete and records `run_info`'s step and weights."""
  path = storage.join(base, str(version))
  # Without saved_model.pb the version is incomplete (its publisher died);
  # the run info alone proves nothing about the rest of its files.
  if not storage.exists(storage.join(path, versions.SAVED_MODEL_PB)):
    return False
  try:
    recorded = storage.read_json(storage.join(path, "assets.extra", RUN_INFO_FILE))
  except ValueError:  # not JSON: not this trainer's run info
    return False
  return isinstance(recorded, dict) and all(recorded.get(k) == run_info.get(k)
                                            for k in ("global_step", "weights_sha256"))
