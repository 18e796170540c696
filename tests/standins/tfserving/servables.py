"""One loaded model version: the SavedModel, its signatures, Predict and warm-up.

Signatures are read from saved_model.pb's "serve" meta graph, which is what
TF Serving reads; the functions run through `tf.saved_model.load`.
"""

from __future__ import annotations

import os
import numpy as np
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError
from standins.tfserving import metrics as metrics_lib
from standins.tfserving import rules

DEFAULT_SIGNATURE = "serving_default"
NUMPY_DTYPES = {types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT32: np.int32,
                types_pb2.DT_INT64: np.int64, types_pb2.DT_FLOAT: np.float32,
                types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_STRING: object}


def _op_message(error: tf.errors.OpError) -> str:
  """The failing op's own message, as a TF Serving session would report it.

  Eager calls wrap it: "Graph execution error:\\n\\nDetected at node X defined
  at (most recent call last):\\n<stack>\\n<the op's message>".
  """
  lines = error.message.splitlines()
  if not lines or not lines[0].startswith("Graph execution error"):
    return error.message
  for i, line in enumerate(lines):
    if i and not line.startswith(("Detected at node", " ", "<stack traces unavailable>")) and line.strip():
      return "\n".join(lines[i:])
  return error.message


def _code_from_tf(error: tf.errors.OpError) -> Code:
  """TensorFlow's error codes are the canonical ones, by number."""
  return next((c for c in Code if c.value == error.error_code), Code.UNKNOWN)


class Servable:
  """A loaded version of a model.

  Raises (from the constructor): ServingError when the directory holds no
  loadable SavedModel, or a warm-up record fails; the version then fails to
  load.
  """

  def __init__(self, name: str, version: int, path: str, warmup: bool = True,
               warmup_iterations: int = 1, batching=None, metrics=None):
    """Args (beyond the version's): batching, the server's batching.BatchScheduler
    (--enable_batching) or None; metrics, the server's metrics.Metrics or None."""
    self.name = name
    self.version = version
    self.path = path
    self._batching = batching
    self._queues = {}  # signature key -> its batching queue
    try:
      saved_model = saved_model_pb2.SavedModel()
      with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
      self.loaded = tf.saved_model.load(path)
    except (OSError, ValueError, message.DecodeError, tf.errors.OpError) as e:
      if metrics:
        metrics.count(metrics_lib.LOAD_ATTEMPT_COUNT, path, "fail")
      raise ServingError(Code.NOT_FOUND if isinstance(e, OSError) else Code.INTERNAL,
                         f"Could not load SavedModel from {path}: {e}") from e
    if metrics:  # loader.cc counts the SavedModel's load; warm-up comes after it
      metrics.count(metrics_lib.LOAD_ATTEMPT_COUNT, path, "success")
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
      raise ServingError(Code.NOT_FOUND, f"Could not find meta graph def matching supplied tags: "
                                         f"{{ serve }} in {path}")
    self.signature_defs = graphs[0].signature_def
    if batching is not None:  # batching_session.cc: a queue per signature
      self._queues = {key: batching.queue(self._runner(key)) for key in self.signature_defs}
    try:
      if warmup:
        self._warm_up(warmup_iterations)
    except ServingError:
      self.close()
      raise

  def _runner(self, key: str):
    # Looked up at call time, so a test can replace _run on the instance.
    return lambda feeds: self._run(key, feeds)

  def close(self) -> None:
    """Unload: the version's batching queues leave the shared scheduler."""
    for queue in self._queues.values():
      self._batching.remove(queue)
    self._queues = {}

  def _warm_up(self, iterations: int) -> None:
    """Replays assets.extra/tf_serving_warmup_requests; any failure fails the load.

    Source: servables/tensorflow/saved_model_warmup_util.cc, RunSavedModelWarmup
    (no file: nothing to do; a record that does not parse, bad TFRecord
    framing or a failing request fails the load).
    """
    from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=import-outside-toplevel
    path = os.path.join(self.path, rules.WARMUP_FILE)
    if not os.path.exists(path):
      return
    count = 0
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        try:
          log.ParseFromString(record)
        except Exception as e:  # protobuf's DecodeError
          raise ServingError(Code.INVALID_ARGUMENT,
                             f"Failed to parse warmup record: {record[:40]!r} from {path}") from e
        log_type = log.WhichOneof("log_type")
        rules.check_warmup_log_type(log_type)
        for _ in range(iterations):
          if log_type == "predict_log":
            request = log.predict_log.request
            self.predict(request.model_spec.signature_name,
                         {k: ndarray(v) for k, v in request.inputs.items()})
          elif log_type is not None:
            raise ServingError(Code.UNIMPLEMENTED,
                               f"the stand-in replays predict warm-up records only, not {log_type}")
        count += 1
        rules.check_warmup_count(count, path)
    except tf.errors.OpError as e:  # TFRecord framing: DataLoss, corrupted record
      raise ServingError(_code_from_tf(e), f"{path}: {_op_message(e)}") from e

  def signature(self, signature_name: str, rest: bool = False):
    """(key, SignatureDef) for a request's signature_name ("" is serving_default).

    Raises:
      ServingError: FAILED_PRECONDITION for Predict (rules.predict_signature_not_found),
        INVALID_ARGUMENT for REST's earlier lookup (rules.rest_signature_not_found).
    """
    key = signature_name or DEFAULT_SIGNATURE
    if key not in self.signature_defs or key.startswith("__"):
      raise (rules.rest_signature_not_found(key) if rest else rules.predict_signature_not_found(key))
    return key, self.signature_defs[key]

  def predict(self, signature_name: str,
              inputs: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """Runs a signature as servables/tensorflow/predict_util.cc, RunPredict does.

    Returns:
      (signature key, outputs).
    """
    key, signature = self.signature(signature_name)
    expected = set(signature.inputs)
    if set(inputs) != expected:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f"input size does not match signature: {len(inputs)}!={len(expected)} "
          f"len({sorted(inputs)}) != len({sorted(expected)}). Sent extra: "
          f"{sorted(set(inputs) - expected)}. Missing but required: {sorted(expected - set(inputs))}.")
    feeds = {}
    for alias, info in signature.inputs.items():
      value = np.asarray(inputs[alias])
      dtype = NUMPY_DTYPES.get(info.dtype)
      if dtype is None or value.dtype != np.dtype(dtype):
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"Expects arg[0] to be {types_pb2.DataType.Name(info.dtype)[3:].lower()} but "
            f"{_dtype_name(value)} is provided")
      want = [d.size for d in info.tensor_shape.dim]
      if not info.tensor_shape.unknown_rank and (
          len(want) != value.ndim or any(w >= 0 and w != g for w, g in zip(want, value.shape))):
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input '{alias}' has shape {list(value.shape)}; the signature takes {want}")
      feeds[alias] = value
    if key in self._queues:  # Session::Run through the batching session
      return key, self._queues[key].schedule(feeds)
    return key, self._run(key, feeds)

  def _run(self, key: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
      outputs = self.loaded.signatures[key](**{k: tf.constant(v) for k, v in feeds.items()})
    except tf.errors.OpError as e:
      raise ServingError(_code_from_tf(e), _op_message(e)) from e
    return {k: v.numpy() for k, v in outputs.items()}


def _dtype_name(value: np.ndarray) -> str:
  return "string" if value.dtype == object else value.dtype.name


def ndarray(proto) -> np.ndarray:
  """A TensorProto as numpy, INVALID_ARGUMENT if it is not a valid tensor."""
  try:
    return tf.make_ndarray(proto)
  except (TypeError, ValueError) as e:
    raise ServingError(Code.INVALID_ARGUMENT, f"cannot parse an input tensor: {e}") from e
