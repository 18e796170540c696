"""PROTOCOL STAND-IN for TensorFlow Serving: tests and benchmarks only, NOT TF Serving.

The TF Serving model server cannot run on the development machines (no Docker
engine; the binary is on neither PyPI nor Debian). This module speaks TF
Serving's two protocols over the real exported SavedModels, so that
serving/client.py can be tested over real sockets on 127.0.0.1:

* REST, as tensorflow_serving/model_servers/http_rest_api_handler.cc serves it:
    POST /v1/models/<name>[/versions/<v>|/labels/<label>]:predict
         {"signature_name": ..., "instances": [...]}  (row format)  -> {"predictions": [...]}
         {"signature_name": ..., "inputs": {...}}     (columnar)    -> {"outputs": {...}}
         binary strings as {"b64": "..."} both ways (outputs named *_bytes)
    GET  /v1/models/<name>[/versions/<v>|/labels/<label>]           -> model version status
    GET  /v1/models/<name>[/versions/<v>|/labels/<label>]/metadata  -> the signature_def map
  Errors are {"error": "..."} with the HTTP status TF Serving maps each code
  to (http_server.cc): NOT_FOUND 404, INVALID_ARGUMENT 400, ...
* gRPC tensorflow.serving.PredictionService: Predict and GetModelMetadata
  (whose metadata["signature_def"] packs a SignatureDefMap, as TF Serving's does).

Each model is a base path with integer version directories; a request without
a version gets the highest. Versions load with `tf.saved_model.load` on first
use, and signatures are read from saved_model.pb's "serve" meta graph, which
is what TF Serving reads. Error codes follow TF Serving: NOT_FOUND "Servable
not found for request: Specific(cifar10, 7)" for an unknown model or version,
INVALID_ARGUMENT "Unrecognized servable version label: x", and the SavedModel's
own error (e.g. serving_encoded's wrong-size message) passed through with its
code. Messages for malformed inputs are the stand-in's own wording.

Not implemented: batching, version policies, config files and reloads,
Classify/Regress, monitoring.

  python tests/tfserving_standin.py --model cifar10=runs/cifar10/export/cifar10 \\
      --rest-port 8501 --grpc-port 8500
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import gc
import http.server
import json
import os
import re
import socket
import threading
from typing import Any, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

Code = grpc.StatusCode

# TF Serving's mapping from error code to HTTP status (model_servers/http_server.cc).
HTTP_STATUS = {
    Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401}
# The request paths TF Serving's REST handler accepts (http_rest_api_util.cc).
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_DEFAULT_SIGNATURE = "serving_default"
_NUMPY_DTYPES = {types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT32: np.int32,
                 types_pb2.DT_INT64: np.int64, types_pb2.DT_FLOAT: np.float32,
                 types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_STRING: object}


class ServingError(Exception):
  """An error with the gRPC status code TF Serving would return."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def _op_message(error: tf.errors.OpError) -> str:
  """The failing op's own message, as a TF Serving session would report it.

  Eager calls wrap it: "Graph execution error:\n\nDetected at node X defined
  at (most recent call last):\n<stack>\n<the op's message>".
  """
  lines = error.message.splitlines()
  if not lines or not lines[0].startswith("Graph execution error"):
    return error.message
  for i, line in enumerate(lines):
    if i and not line.startswith(("Detected at node", " ", "<stack traces unavailable>")) and line.strip():
      return "\n".join(lines[i:])
  return error.message


def _code_from_tf(error: tf.errors.OpError) -> grpc.StatusCode:
  """TensorFlow's error codes are the gRPC ones, by number."""
  return next((c for c in Code if c.value[0] == error.error_code), Code.UNKNOWN)


class _Version:
  """One loaded version: the SavedModel and the signatures TF Serving would read."""

  def __init__(self, name: str, version: int, path: str):
    self.name = name
    self.version = version
    self.loaded = tf.saved_model.load(path)
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
      saved_model.ParseFromString(f.read())
    (graph,) = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    self.signature_defs = graph.signature_def


class Models:
  """The model registry: name -> base path, versions loaded on first use."""

  def __init__(self, base_paths: dict[str, str], labels: Optional[dict[str, dict[str, int]]] = None):
    self.base_paths = dict(base_paths)
    self.labels = {k: dict(v) for k, v in (labels or {}).items()}
    self._loaded: dict[tuple[str, int], _Version] = {}
    self._lock = threading.Lock()

  def versions(self, name: str) -> list[int]:
    base = self.base_paths[name]
    return sorted(int(n) for n in os.listdir(base)
                  if n.isdigit() and os.path.isfile(os.path.join(base, n, "saved_model.pb")))

  def get(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> _Version:
    """The servable for a request, with TF Serving's errors for unknown ones."""
    if not name:
      raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    if version is not None and label:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Both model version ({version}) and model version label ({label}) "
                         "cannot be supplied.")
    if label:
      if label not in self.labels.get(name, {}):
        raise ServingError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
      version = self.labels[name][label]
    request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    available = self.versions(name) if name in self.base_paths else []
    if version is None and available:
      version = available[-1]
    if version not in available:
      raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {request}")
    with self._lock:
      key = (name, version)
      if key not in self._loaded:
        self._loaded[key] = _Version(name, version, os.path.join(self.base_paths[name], str(version)))
      return self._loaded[key]

  def signature(self, servable: _Version, signature_name: str):
    key = signature_name or _DEFAULT_SIGNATURE
    if key not in servable.signature_defs or key.startswith("__"):
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Serving signature name: \"{key}\" not found in signature def")
    return key, servable.signature_defs[key]

  def run(self, servable: _Version, signature_name: str,
          inputs: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """Runs a signature; returns (signature key, outputs)."""
    key, signature = self.signature(servable, signature_name)
    expected = set(signature.inputs)
    if set(inputs) != expected:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f"input size does not match signature: {len(inputs)}!={len(expected)} "
          f"len({sorted(inputs)}) != len({sorted(expected)}). Sent extra: "
          f"{sorted(set(inputs) - expected)}. Missing but required: {sorted(expected - set(inputs))}.")
    feeds = {}
    for alias, info in signature.inputs.items():
      value = inputs[alias]
      dtype = _NUMPY_DTYPES.get(info.dtype)
      if dtype is None or np.asarray(value).dtype != np.dtype(dtype):
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input '{alias}' is {np.asarray(value).dtype}; the signature takes "
            f"{types_pb2.DataType.Name(info.dtype)}")
      want = [d.size for d in info.tensor_shape.dim]
      if not info.tensor_shape.unknown_rank and (
          len(want) != value.ndim or any(w >= 0 and w != g for w, g in zip(want, value.shape))):
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input '{alias}' has shape {list(value.shape)}; the signature takes {want}")
      feeds[alias] = tf.constant(value)
    try:
      outputs = servable.loaded.signatures[key](**feeds)
    except tf.errors.OpError as e:
      raise ServingError(_code_from_tf(e), _op_message(e)) from e
    return key, {k: v.numpy() for k, v in outputs.items()}


# --------------------------------------------------------------------- REST


def _decode_b64(value: Any) -> Any:
  """Replaces {"b64": "..."} objects with the bytes they encode, recursively."""
  if isinstance(value, dict) and set(value) == {"b64"}:
    try:
      return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError) as e:
      raise ServingError(Code.INVALID_ARGUMENT, f"Unable to base64 decode: {e}") from e
  if isinstance(value, list):
    return [_decode_b64(v) for v in value]
  return value


def _to_array(value: Any, info) -> np.ndarray:
  """A JSON value as the signature input's dtype; {"b64": ...} only for strings."""
  dtype = _NUMPY_DTYPES.get(info.dtype, object)
  try:
    if dtype is object:
      array = np.array(_decode_b64(value), dtype=object)
      if any(not isinstance(v, bytes) for v in array.ravel()):
        array = np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode(),
                             otypes=[object])(array)
      return array
    return np.array(value, dtype=dtype)
  except (ValueError, TypeError, OverflowError) as e:
    raise ServingError(Code.INVALID_ARGUMENT,
                       f"cannot convert the JSON value to {types_pb2.DataType.Name(info.dtype)}: {e}") from e


def _json_value(name: str, array: np.ndarray) -> Any:
  """An output as JSON: strings as text, or {"b64": ...} for outputs named *_bytes."""
  if array.dtype == object:
    if name.endswith("_bytes"):
      return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(array).tolist()
    return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
  return array.tolist()


def _parse_predict_body(models: Models, servable: _Version, body: bytes):
  """(signature name, inputs, row format?) from a REST predict body."""
  try:
    request = json.loads(body or b"{}")
  except ValueError as e:
    raise ServingError(Code.INVALID_ARGUMENT, f"JSON Parse error: {e}") from e
  if not isinstance(request, dict):
    raise ServingError(Code.INVALID_ARGUMENT, "JSON Value not an object")
  signature_name = request.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise ServingError(Code.INVALID_ARGUMENT, "'signature_name' key must be a string value.")
  if ("instances" in request) == ("inputs" in request):
    raise ServingError(Code.INVALID_ARGUMENT,
                       "Missing 'inputs' or 'instances' key" if "instances" not in request else
                       "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exist")
  _, signature = models.signature(servable, signature_name)
  names = list(signature.inputs)
  if "instances" in request:
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
      raise ServingError(Code.INVALID_ARGUMENT, "'instances' must be a non-empty JSON array")
    named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
    if len(names) > 1 and not named:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Expecting object with named inputs {names} in each instance")
    if named and any(set(i) != set(names) for i in instances):
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Each instance must name exactly the inputs {names}")
    columns = {n: [i[n] for i in instances] if named else instances for n in names}
    return signature_name, {n: _to_array(v, signature.inputs[n]) for n, v in columns.items()}, True
  inputs = request["inputs"]
  if not (isinstance(inputs, dict) and set(inputs) != {"b64"}):
    if len(names) != 1:
      raise ServingError(Code.INVALID_ARGUMENT, f"'inputs' must name the inputs {names}")
    inputs = {names[0]: inputs}
  # Unknown names are kept, so that run() reports them as "Sent extra".
  return signature_name, {n: _to_array(v, signature.inputs[n]) if n in signature.inputs
                          else np.asarray(_decode_b64(v), dtype=object) for n, v in inputs.items()}, False


def _rest_response(path: str, method: str, body: bytes, models: Models) -> tuple[int, dict]:
  """Handles one REST request; returns (HTTP status, JSON object)."""
  try:
    if method == "POST":
      match = _PREDICT_PATH.fullmatch(path)
      if not match:
        raise ServingError(Code.INVALID_ARGUMENT, f"Malformed request: POST {path}")
      name, version, label, verb = match.groups()
      if verb.lower() != "predict":
        raise ServingError(Code.UNIMPLEMENTED, f"the stand-in does not implement :{verb}")
      servable = models.get(name, int(version) if version else None, label)
      signature_name, inputs, row = _parse_predict_body(models, servable, body)
      _, outputs = models.run(servable, signature_name, inputs)
      if row:
        count = len(next(iter(outputs.values())))
        values = {k: _json_value(k, v) for k, v in outputs.items()}
        if len(values) == 1:
          return 200, {"predictions": next(iter(values.values()))}
        return 200, {"predictions": [{k: v[i] for k, v in values.items()} for i in range(count)]}
      values = {k: _json_value(k, v) for k, v in outputs.items()}
      return 200, {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    match = _STATUS_PATH.fullmatch(path)
    if not match:
      raise ServingError(Code.INVALID_ARGUMENT, f"Malformed request: GET {path}")
    name, version, label, subresource = match.groups()
    if not name:
      raise ServingError(Code.INVALID_ARGUMENT, "Missing model name in request.")
    if subresource:
      servable = models.get(name, int(version) if version else None, label)
      return 200, _metadata_json(servable)
    return 200, _status_json(models, name, int(version) if version else None, label)
  except ServingError as e:
    return HTTP_STATUS.get(e.code, 500), {"error": e.message}


def _signature_def_map(servable: _Version):
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  for key, signature in servable.signature_defs.items():
    signature_defs.signature_def[key].CopyFrom(signature)
  return signature_defs


def _metadata_json(servable: _Version) -> dict:
  # TF Serving prints each part with preserved field names and defaults included.
  return {"model_spec": {"name": servable.name, "signature_name": "",
                         "version": str(servable.version)},
          "metadata": {"signature_def": json_format.MessageToDict(
              _signature_def_map(servable), preserving_proto_field_name=True,
              always_print_fields_with_no_presence=True)}}


def _status_json(models: Models, name: str, version: Optional[int], label: Optional[str]) -> dict:
  if version is not None or label:
    versions = [models.get(name, version, label).version]
  else:
    versions = models.versions(name) if name in models.base_paths else []
    if not versions:
      raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
  response = get_model_status_pb2.GetModelStatusResponse()
  for v in sorted(versions, reverse=True):
    status = response.model_version_status.add(version=v)
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
  return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def _rest_handler(models: Models):
  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving
    disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs

    def log_message(self, *args):
      pass

    def _handle(self):
      length = int(self.headers.get("Content-Length") or 0)
      body = self.rfile.read(length) if length else b""
      status, payload = _rest_response(self.path.split("?", 1)[0], self.command, body, models)
      data = json.dumps(payload).encode()
      try:
        reason = http.HTTPStatus(status).phrase
      except ValueError:  # 499, nginx's "client closed request", has no standard phrase
        reason = "Client Closed Request"
      head = (f"HTTP/1.1 {status} {reason}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
      self.wfile.write(head + data)  # one write: headers and body in one segment

    do_GET = do_POST = _handle

  return Handler


# --------------------------------------------------------------------- gRPC


def _as_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
  """A tensor in the typed *_val fields, as TF Serving's Tensor::AsProtoField writes it."""
  proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  flat = array.ravel()
  if array.dtype == object:
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(flat.tolist())
  elif array.dtype == np.float32:
    proto.dtype = types_pb2.DT_FLOAT
    proto.float_val.extend(flat.tolist())
  elif array.dtype == np.int64:
    proto.dtype = types_pb2.DT_INT64
    proto.int64_val.extend(flat.tolist())
  else:
    proto.CopyFrom(tf.make_tensor_proto(array))
  return proto


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, models: Models):
    self.models = models

  def _servable(self, spec) -> _Version:
    return self.models.get(spec.name, spec.version.value if spec.HasField("version") else None,
                           spec.version_label or None)

  def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
    try:
      servable = self._servable(request.model_spec)
      try:
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      except (TypeError, ValueError) as e:
        raise ServingError(Code.INVALID_ARGUMENT, f"cannot parse an input tensor: {e}") from e
      key, outputs = self.models.run(servable, request.model_spec.signature_name, inputs)
      if request.output_filter:
        unknown = set(request.output_filter) - set(outputs)
        if unknown:
          raise ServingError(Code.INVALID_ARGUMENT, f"output tensor alias not found in signature: "
                                                    f"{sorted(unknown)[0]}")
        outputs = {k: v for k, v in outputs.items() if k in request.output_filter}
      response = predict_pb2.PredictResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.model_spec.signature_name = key
      for name, value in outputs.items():
        response.outputs[name].CopyFrom(_as_proto_field(value))
      return response
    except ServingError as e:
      context.abort(e.code, e.message)

  def GetModelMetadata(self, request, context):  # noqa: N802
    try:
      if not request.metadata_field:
        raise ServingError(Code.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
      for field in request.metadata_field:
        if field != "signature_def":
          raise ServingError(Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
      servable = self._servable(request.model_spec)
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      response.metadata["signature_def"].Pack(_signature_def_map(servable))
      return response
    except ServingError as e:
      context.abort(e.code, e.message)


# ------------------------------------------------------------------- server


class StandIn:
  """The REST and gRPC servers, on 127.0.0.1, on background threads.

  Usage:
    with StandIn({"cifar10": "/path/export/cifar10"}).start() as server:
      server.rest_url      # http://127.0.0.1:PORT
      server.grpc_target   # 127.0.0.1:PORT
  """

  def __init__(self, base_paths: dict[str, str], labels: Optional[dict[str, dict[str, int]]] = None,
               models: Optional[Models] = None):
    self.models = models or Models(base_paths, labels)
    self._http: Optional[http.server.ThreadingHTTPServer] = None
    self._grpc: Optional[grpc.Server] = None
    self.rest_port: Optional[int] = None
    self.grpc_port: Optional[int] = None

  @property
  def rest_url(self) -> str:
    return f"http://127.0.0.1:{self.rest_port}"

  @property
  def grpc_target(self) -> str:
    return f"127.0.0.1:{self.grpc_port}"

  def start(self, rest_port: Optional[int] = 0, grpc_port: Optional[int] = 0,
            rest_socket: Optional[socket.socket] = None) -> "StandIn":
    """Starts the servers and records the ports they got in rest_port and grpc_port.

    Args:
      rest_port: port for REST; 0 picks a free one, None leaves REST off.
      grpc_port: port for gRPC; 0 picks a free one, None leaves gRPC off. The
        server binds with SO_REUSEPORT, so a caller may hold the port with a
        bound, non-listening SO_REUSEPORT socket until then (gRPC cannot adopt
        a socket); connections go only to the listening server.
      rest_socket: a bound socket that has not called listen(): REST listens
        on this very socket instead of binding rest_port. A test binds it
        before a client's first attempt (which is then refused) and hands it
        over later, with no window in which another process can take the port.

    Returns:
      self.
    """
    if rest_socket is not None:
      self._http = http.server.ThreadingHTTPServer(
          rest_socket.getsockname(), _rest_handler(self.models), bind_and_activate=False)
      self._http.socket.close()  # the unbound one it made
      self._http.socket = rest_socket
      self._http.server_activate()  # listen()
    elif rest_port is not None:
      self._http = http.server.ThreadingHTTPServer(("127.0.0.1", rest_port), _rest_handler(self.models))
    if self._http:
      self._http.daemon_threads = True
      self.rest_port = self._http.server_address[1]
      threading.Thread(target=self._http.serve_forever, daemon=True, name="standin-rest").start()
    if grpc_port is not None:
      # grpcio's default on Linux, stated here because the tests rely on it.
      self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                               options=[("grpc.so_reuseport", 1)])
      prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
          _PredictionService(self.models), self._grpc)
      self.grpc_port = self._grpc.add_insecure_port(f"127.0.0.1:{grpc_port}")
      self._grpc.start()
    return self

  def stop(self) -> None:
    if self._http:
      self._http.shutdown()
      self._http.server_close()
      self._http = None
    if self._grpc:
      self._grpc.stop(grace=None)
      self._grpc = None

  def __enter__(self) -> "StandIn":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description="TF Serving protocol stand-in (tests only).")
  parser.add_argument("--model", action="append", required=True, metavar="NAME=BASE_PATH",
                      help="A model and its base path (repeatable).")
  parser.add_argument("--label", action="append", default=[], metavar="NAME:LABEL=VERSION",
                      help="A version label (repeatable).")
  parser.add_argument("--rest-port", type=int, default=8501)
  parser.add_argument("--grpc-port", type=int, default=8500)
  args = parser.parse_args(argv)
  base_paths = dict(m.split("=", 1) for m in args.model)
  labels: dict[str, dict[str, int]] = {}
  for item in args.label:
    key, version = item.split("=", 1)
    name, label = key.split(":", 1)
    labels.setdefault(name, {})[label] = int(version)
  server = StandIn(base_paths, labels).start(args.rest_port, args.grpc_port)
  # Keep garbage collections from rescanning TensorFlow's ~300k start-up
  # objects on every JSON request (they would make parsing ~7x slower).
  gc.collect()
  gc.freeze()
  print(f"TF Serving protocol stand-in: REST {server.rest_url}, gRPC {server.grpc_target}", flush=True)
  threading.Event().wait()


if __name__ == "__main__":
  main()
