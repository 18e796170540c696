"""Classify image files with a model behind TF Serving, over REST or gRPC.

  python -m serving.client --rest http://localhost:8501 --model cifar10 cat.png ship.jpg
  python -m serving.client --grpc localhost:8500 --model cifar10 --label stable cat.png
  python -m serving.client --rest http://localhost:8501 --model cifar10 --encoded --json cat.jpg

For each file it prints the `--top-k` classes with their probabilities. The
class names come from the model's own `class_names` output (trainer/export.py),
so no label list can drift from the training data.

By default the files are decoded here (Pillow) and sent as uint8 pixels to the
`serving_default` signature; `--encoded` sends the file bytes to
`serving_encoded` (REST `{"b64": ...}`), which decodes on the server. Nothing is
resized or converted unless `--resize` is given: an image whose size or
channel count differs from what the model's metadata says it takes is refused
before anything is sent. (With `--encoded` only the size is checked: the
server converts channels itself.)

As a library:

  from serving.client import PredictClient
  with PredictClient.rest("http://localhost:8501", "cifar10") as client:
    result = client.predict(images)   # uint8 [N, H, W, C]
    result.top_k(3)[0]                # [("cat", 0.91), ("dog", 0.05), ("deer", 0.01)]

Exit codes (every error is one line on stderr, starting with `error: `; a
retry is announced on a `warning: ` line before it):

  | code | meaning |
  | ---- | ------- |
  | 0    | predictions printed |
  | 1    | unexpected failure (a bug): traceback |
  | 2    | bad local input: a missing or unreadable file, not an image, the wrong size or channel count without --resize, bad flags |
  | 3    | the server rejected the request: NOT_FOUND (unknown model, version or label), INVALID_ARGUMENT (the server's message passed through), FAILED_PRECONDITION or any other error status; or the model's signatures are not the ones trainer.export writes |
  | 69   | the server could not be reached (UNAVAILABLE, after 3 attempts with backoff) or did not answer within --timeout (DEADLINE_EXCEEDED) |

Only UNAVAILABLE (REST: connection refused or reset, HTTP 502/503) is retried:
a prediction is idempotent, and everything else would fail the same way again.
The first retry waits --retry-backoff-s (0.5 s), the second twice that.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
import time
import urllib.parse
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_REJECTED = 3
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE in sysexits.h

DEFAULT_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "serving_encoded"
# Inputs and outputs of the signatures trainer/export.py writes.
IMAGES_INPUT = "images"
ENCODED_INPUT = "image_bytes"
OUTPUTS = ("probabilities", "classes", "class_names")

DEFAULT_TIMEOUT_S = 10.0
# Three attempts, 0.5 s then 1 s apart: rides out a server restart or a full
# batching queue without hiding a server that is really down.
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 0.5
# Images per request. Fits one server-side batch (max_batch_size 64 in
# serving/batching_parameters.txt), and keeps a REST body of 32x32x3 images
# as JSON under ~1 MB.
DEFAULT_BATCH_SIZE = 32
# gRPC's default 4 MB receive limit is too small for large batches of big images.
_GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Formats `tf.io.decode_image` (the serving_encoded signature) reads, as Pillow names them.
_SERVER_DECODABLE = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# REST status -> the gRPC status name TF Serving mapped to it (http_server.cc).
# 400 also covers FAILED_PRECONDITION and OUT_OF_RANGE, which REST cannot tell apart.
_HTTP_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class ClientError(Exception):
  """An error the client reports as one line and an exit code."""

  exit_code = 1


class InputError(ClientError):
  """The local input cannot be sent: a missing or non-image file, the wrong size, bad flags."""

  exit_code = EXIT_INPUT


class RequestRejected(ClientError):
  """The server answered with an error status (NOT_FOUND, INVALID_ARGUMENT, ...)."""

  exit_code = EXIT_REJECTED

  def __init__(self, message: str, code: str = "", server_message: str = ""):
    super().__init__(message)
    self.code = code
    self.server_message = server_message


class ServerUnavailable(ClientError):
  """The server could not be reached (UNAVAILABLE) or did not answer in time (DEADLINE_EXCEEDED)."""

  exit_code = EXIT_UNAVAILABLE

  def __init__(self, message: str, code: str):
    super().__init__(message)
    self.code = code


class _StatusError(Exception):
  """A transport-level error status, before it is turned into a ClientError."""

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code = code
    self.message = message


# ------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """A signature input or output as TF Serving describes it."""
  dtype: str  # TensorFlow's enum name, e.g. "DT_UINT8"
  shape: Optional[tuple[Optional[int], ...]]  # None: unknown rank; a None dim: any size


@dataclasses.dataclass(frozen=True)
class Signature:
  inputs: dict[str, TensorSpec]
  outputs: dict[str, TensorSpec]


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
  """What GetModelMetadata returns: the served version and its signatures."""
  name: str
  version: Optional[int]
  signatures: dict[str, Signature]

  def image_shape(self) -> tuple[int, int, int]:
    """(height, width, channels) that serving_default's uint8 `images` input takes.

    Raises:
      RequestRejected: the model does not have trainer.export's signatures.
    """
    signature = self.signatures.get(DEFAULT_SIGNATURE)
    spec = signature.inputs.get(IMAGES_INPUT) if signature else None
    if (spec is None or spec.dtype != "DT_UINT8" or spec.shape is None or len(spec.shape) != 4
        or None in spec.shape[1:]):
      raise RequestRejected(
          f"model {self.name!r} has no {DEFAULT_SIGNATURE} signature taking uint8 "
          f"{IMAGES_INPUT} [batch, height, width, channels] (found {spec}): this client serves "
          "models exported by trainer.export.")
    return tuple(spec.shape[1:])  # type: ignore[return-value]


@dataclasses.dataclass
class PredictResult:
  """Predictions for a batch of images."""
  model: str
  version: Optional[int]  # as the server reported it (gRPC); None over REST
  signature: str
  probabilities: np.ndarray  # float32 [batch, classes]
  classes: np.ndarray  # int64 [batch]
  class_names: list[list[str]]  # [batch][classes]: the name of class i at [i]

  def top_k(self, k: int) -> list[list[tuple[str, float]]]:
    """Per image, the k most probable (class name, probability), best first."""
    k = min(k, self.probabilities.shape[1])
    order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
    return [[(self.class_names[i][j], float(self.probabilities[i, j])) for j in row]
            for i, row in enumerate(order)]


# --------------------------------------------------------------- transports


def _first_line(text: str) -> str:
  """The first non-empty line: TF error messages append graph details on later lines."""
  for line in str(text).splitlines():
    if line.strip():
      return line.strip()
  return str(text).strip()


def _tensor_spec(info: dict) -> TensorSpec:
  shape = info.get("tensor_shape") or {}
  if shape.get("unknown_rank"):
    dims = None
  else:
    dims = tuple(None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in shape.get("dim", []))
  return TensorSpec(info.get("dtype", "DT_INVALID"), dims)


def _parse_metadata(name: str, body: dict) -> ModelMetadata:
  """Parses TF Serving's metadata JSON (REST), or the same built from the gRPC proto."""
  try:
    spec = body.get("model_spec", {})
    version = spec.get("version")
    defs = body["metadata"]["signature_def"]["signature_def"]
    signatures = {
        key: Signature({k: _tensor_spec(v) for k, v in sig.get("inputs", {}).items()},
                       {k: _tensor_spec(v) for k, v in sig.get("outputs", {}).items()})
        for key, sig in defs.items()}
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise RequestRejected(f"the server's metadata for model {name!r} is not TF Serving's "
                          f"format ({type(e).__name__}: {e}): is this a TF Serving endpoint?") from e
  return ModelMetadata(spec.get("name", name), int(version) if version not in (None, "") else None,
                       signatures)


class _RestTransport:
  """TF Serving's REST API: /v1/models/<name>[/versions/<v>|/labels/<l>][:predict|/metadata]."""

  def __init__(self, url: str, timeout_s: float):
    import requests  # pylint: disable=import-outside-toplevel
    self._requests = requests
    self.url = url.rstrip("/")
    self.timeout_s = timeout_s
    self.session = requests.Session()  # keep-alive: one connection for all requests

  def describe(self) -> str:
    return self.url

  def _model_path(self, model: str, version: Optional[int], label: Optional[str]) -> str:
    path = f"{self.url}/v1/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
      path += f"/versions/{version}"
    elif label:
      path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path

  def _call(self, method: str, url: str, body: Optional[dict] = None) -> dict:
    requests = self._requests
    try:
      response = self.session.request(
          method, url, data=None if body is None else json.dumps(body),
          headers={"Content-Type": "application/json"}, timeout=self.timeout_s)
    except requests.Timeout as e:
      raise _StatusError("DEADLINE_EXCEEDED", f"no answer within {self.timeout_s:g} s") from e
    except requests.ConnectionError as e:
      reason = "connection refused" if "refused" in str(e).lower() else _first_line(str(e))
      raise _StatusError("UNAVAILABLE", reason) from e
    try:
      payload = response.json()
    except ValueError:
      payload = None
    if response.status_code != 200:
      if isinstance(payload, dict) and "error" in payload:
        message = str(payload["error"])
      else:
        message = response.text.strip()[:200] or response.reason
      raise _StatusError(_HTTP_STATUS_NAMES.get(response.status_code, "UNKNOWN"),
                         f"HTTP {response.status_code}: {_first_line(message)}")
    if not isinstance(payload, dict):
      raise _StatusError("UNKNOWN", f"HTTP 200 without a JSON object from {url}")
    return payload

  def metadata(self, model: str, version: Optional[int], label: Optional[str]) -> dict:
    return self._call("GET", self._model_path(model, version, label) + "/metadata")

  def predict(self, model: str, version: Optional[int], label: Optional[str], signature: str,
              input_name: str, values: Any) -> tuple[Optional[int], dict[str, np.ndarray]]:
    if isinstance(values, np.ndarray):
      instances = values.tolist()
    else:  # encoded files: binary strings travel as {"b64": ...}
      instances = [{"b64": base64.b64encode(v).decode("ascii")} for v in values]
    body = {"signature_name": signature, "instances": instances}
    payload = self._call("POST", self._model_path(model, version, label) + ":predict", body)
    predictions = payload.get("predictions")
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
      raise _StatusError("UNKNOWN", "the response has no list of predictions with named outputs")
    outputs = {name: np.array([p[name] for p in predictions]) for name in OUTPUTS
               if all(name in p for p in predictions)}
    return None, outputs

  def reset(self) -> None:
    self.session.close()
    self.session = self._requests.Session()

  def close(self) -> None:
    self.session.close()


@contextlib.contextmanager
def _quiet_stderr():
  """Sends file descriptor 2 to /dev/null for the duration.

  The serving protos import TensorFlow, whose C++ start-up lines (CPU
  features, no CUDA) are written before its logging is initialised and
  ignore TF_CPP_MIN_LOG_LEVEL; on a client's stderr they are noise. Python
  exceptions are unaffected: they propagate after the descriptor is restored.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class _GrpcTransport:
  """TF Serving's gRPC tensorflow.serving.PredictionService."""

  def __init__(self, target: str, timeout_s: float):
    with _quiet_stderr():
      import grpc  # pylint: disable=import-outside-toplevel
      from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=import-outside-toplevel
      from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
      from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel
    self._grpc = grpc
    self._metadata_pb2 = get_model_metadata_pb2
    self._predict_pb2 = predict_pb2
    self._stub_class = prediction_service_pb2_grpc.PredictionServiceStub
    self.target = target
    self.timeout_s = timeout_s
    self._connect()

  def _connect(self) -> None:
    self.channel = self._grpc.insecure_channel(self.target, options=[
        ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
        # Channels share connections (subchannels) process-wide by default, so
        # the channel reset() opens can get the closed one's refused
        # connection, still in gRPC's own ~1 s reconnect backoff, and fail the
        # retry at once. A channel of its own connects afresh.
        ("grpc.use_local_subchannel_pool", 1)])
    self.stub = self._stub_class(self.channel)

  def describe(self) -> str:
    return self.target

  def _spec(self, request, model: str, version: Optional[int], label: Optional[str]) -> None:
    request.model_spec.name = model
    if version is not None:
      request.model_spec.version.value = version
    elif label:
      request.model_spec.version_label = label

  def _call(self, method: Callable, request):
    try:
      return method(request, timeout=self.timeout_s)
    except self._grpc.RpcError as e:
      code = e.code().name if e.code() else "UNKNOWN"
      details = e.details() or ""
      if code == "DEADLINE_EXCEEDED":
        details = f"no answer within {self.timeout_s:g} s"
      raise _StatusError(code, _first_line(details)) from e

  def metadata(self, model: str, version: Optional[int], label: Optional[str]) -> dict:
    from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=import-outside-toplevel
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request, model, version, label)
    response = self._call(self.stub.GetModelMetadata, request)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(
        signature_defs):
      raise _StatusError("UNKNOWN", "the metadata response has no SignatureDefMap")
    # The same JSON shape TF Serving's REST API returns, so one parser serves both.
    return {"model_spec": {"name": response.model_spec.name,
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_defs, preserving_proto_field_name=True)}}

  def predict(self, model: str, version: Optional[int], label: Optional[str], signature: str,
              input_name: str, values: Any) -> tuple[Optional[int], dict[str, np.ndarray]]:
    request = self._predict_pb2.PredictRequest()
    self._spec(request, model, version, label)
    request.model_spec.signature_name = signature
    if isinstance(values, np.ndarray):
      request.inputs[input_name].CopyFrom(to_tensor_proto(values))
    else:
      request.inputs[input_name].CopyFrom(to_tensor_proto(np.array(list(values), dtype=object)))
    response = self._call(self.stub.Predict, request)
    outputs = {name: to_numpy(proto) for name, proto in response.outputs.items()}
    served = response.model_spec.version.value if response.model_spec.HasField("version") else None
    return served, outputs

  def reset(self) -> None:
    # A channel that failed to connect backs off before it tries again; a
    # retry should connect now.
    self.channel.close()
    self._connect()

  def close(self) -> None:
    self.channel.close()


def _dtypes():
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  return {np.dtype(np.uint8): types_pb2.DT_UINT8, np.dtype(np.int32): types_pb2.DT_INT32,
          np.dtype(np.int64): types_pb2.DT_INT64, np.dtype(np.float32): types_pb2.DT_FLOAT,
          np.dtype(np.float64): types_pb2.DT_DOUBLE}


def to_tensor_proto(array: np.ndarray):
  """A numpy array as a TensorProto: numbers packed in tensor_content, strings in string_val."""
  from tensorflow.core.framework import tensor_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  if array.dtype == object or array.dtype.kind in ("S", "U"):
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    return proto
  if array.dtype not in _dtypes():
    raise ValueError(f"cannot send a {array.dtype} tensor")
  proto.dtype = _dtypes()[array.dtype]
  # TensorFlow reads tensor_content as little-endian, C order.
  proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
  return proto


def to_numpy(proto) -> np.ndarray:
  """A TensorProto as a numpy array, from tensor_content or the typed *_val fields."""
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  shape = [d.size for d in proto.tensor_shape.dim]
  count = int(np.prod(shape)) if shape else 1
  if proto.dtype == types_pb2.DT_STRING:
    return np.array(list(proto.string_val), dtype=object).reshape(shape)
  dtype = {v: k for k, v in _dtypes().items()}.get(proto.dtype)
  if dtype is None:
    raise _StatusError("UNKNOWN", f"unsupported output dtype {types_pb2.DataType.Name(proto.dtype)}")
  if proto.tensor_content:
    return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
  field = {np.float32: proto.float_val, np.float64: proto.double_val, np.int64: proto.int64_val,
           np.int32: proto.int_val, np.uint8: proto.int_val}[dtype.type]
  values = np.array(list(field), dtype=dtype)
  if 0 < values.size < count:  # TensorFlow's compact form: the last value repeats
    values = np.concatenate([values, np.full(count - values.size, values[-1], dtype)])
  return values.reshape(shape)


# ------------------------------------------------------------------ client

_T = TypeVar("_T")


class PredictClient:
  """Predictions from one model (optionally one version or label) behind TF Serving.

  Create with `PredictClient.rest(url, model)` or `PredictClient.grpc(target,
  model)`. A call that finds the server UNAVAILABLE is tried up to `attempts`
  times, `backoff_s` seconds apart at first and doubling; other errors are
  raised at once.

  Raises (from every call):
    InputError: the images do not fit the model.
    RequestRejected: the server answered with an error status.
    ServerUnavailable: the server could not be reached or did not answer in time.
  """

  def __init__(self, transport, model: str, version: Optional[int] = None,
               label: Optional[str] = None, attempts: int = DEFAULT_ATTEMPTS,
               backoff_s: float = DEFAULT_BACKOFF_S):
    if version is not None and label:
      raise InputError("give a version or a label, not both")
    self.transport = transport
    self.model = model
    self.version = version
    self.label = label
    self.attempts = max(1, attempts)
    self.backoff_s = backoff_s
    self._metadata: Optional[ModelMetadata] = None

  @classmethod
  def rest(cls, url: str, model: str, *, version: Optional[int] = None, label: Optional[str] = None,
           timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs) -> "PredictClient":
    """A client for TF Serving's REST API at `url` (http://HOST:8501)."""
    if not url.startswith(("http://", "https://")):
      raise InputError(f"--rest {url!r} is not an http:// or https:// URL: use e.g. http://HOST:8501")
    return cls(_RestTransport(url, timeout_s), model, version, label, **kwargs)

  @classmethod
  def grpc(cls, target: str, model: str, *, version: Optional[int] = None,
           label: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
           **kwargs) -> "PredictClient":
    """A client for TF Serving's gRPC API at `target` (HOST:8500)."""
    if "://" in target or ":" not in target:
      raise InputError(f"--grpc {target!r} is not HOST:PORT: use e.g. localhost:8500")
    return cls(_GrpcTransport(target, timeout_s), model, version, label, **kwargs)

  def __enter__(self) -> "PredictClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self.transport.close()

  def _what(self) -> str:
    if self.version is not None:
      return f"model {self.model!r} version {self.version}"
    if self.label:
      return f"model {self.model!r} label {self.label!r}"
    return f"model {self.model!r}"

  def _with_retries(self, call: Callable[[], _T]) -> _T:
    delay = self.backoff_s
    for attempt in range(1, self.attempts + 1):
      try:
        return call()
      except _StatusError as e:
        where = self.transport.describe()
        if e.code == "UNAVAILABLE" and attempt < self.attempts:
          log.warning("%s is UNAVAILABLE (%s); retrying in %g s (attempt %d of %d)",
                      where, e.message, delay, attempt + 1, self.attempts)
          time.sleep(delay)
          delay *= 2
          self.transport.reset()
          continue
        if e.code == "UNAVAILABLE":
          raise ServerUnavailable(
              f"TF Serving at {where} could not be reached (UNAVAILABLE: {e.message}) after "
              f"{attempt} attempts: check the address and that the server is running.",
              e.code) from e
        if e.code == "DEADLINE_EXCEEDED":
          raise ServerUnavailable(
              f"TF Serving at {where} did not answer (DEADLINE_EXCEEDED: {e.message}): raise "
              "--timeout, or check the server's load and readiness.", e.code) from e
        if e.code == "NOT_FOUND":
          hint = "check --model and --version (GET /v1/models/NAME lists the loaded versions)."
          raise RequestRejected(f"TF Serving at {where} has no {self._what()} "
                                f"(NOT_FOUND: {e.message}): {hint}", e.code, e.message) from e
        hint = (" Check --label: labels are set in models.config."
                if "version label" in e.message.lower() else "")
        raise RequestRejected(f"TF Serving rejected the request for {self._what()} "
                              f"({e.code}: {e.message}).{hint}", e.code, e.message) from e
    raise AssertionError("unreachable")

  def metadata(self) -> ModelMetadata:
    """The served version's signatures (fetched once, then cached)."""
    if self._metadata is None:
      body = self._with_retries(lambda: self.transport.metadata(self.model, self.version, self.label))
      self._metadata = _parse_metadata(self.model, body)
    return self._metadata

  def predict(self, images: np.ndarray) -> PredictResult:
    """Classifies uint8 images [batch, H, W, C] with the serving_default signature.

    Raises:
      InputError: `images` is not uint8 of the model's [H, W, C] (checked
        against the model's metadata before sending).
    """
    h, w, c = self.metadata().image_shape()
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, c):
      raise InputError(
          f"images must be uint8 [batch, {h}, {w}, {c}] for {self._what()}; got "
          f"{images.dtype} {list(images.shape)}")
    return self._predict(DEFAULT_SIGNATURE, IMAGES_INPUT, images, len(images))

  def predict_encoded(self, files: Sequence[bytes]) -> PredictResult:
    """Classifies encoded images (PNG/JPEG/GIF/BMP/WebP file bytes) with serving_encoded."""
    if ENCODED_SIGNATURE not in self.metadata().signatures:
      raise RequestRejected(f"{self._what()} has no {ENCODED_SIGNATURE} signature: send pixels "
                            "instead (drop --encoded).")
    return self._predict(ENCODED_SIGNATURE, ENCODED_INPUT, list(files), len(files))

  def _predict(self, signature: str, input_name: str, values: Any, count: int) -> PredictResult:
    served, outputs = self._with_retries(lambda: self.transport.predict(
        self.model, self.version, self.label, signature, input_name, values))
    missing = [o for o in OUTPUTS if o not in outputs]
    if missing:
      raise RequestRejected(f"{self._what()} returned no {', '.join(missing)} output: this "
                            "client serves models exported by trainer.export.")
    probabilities = np.asarray(outputs["probabilities"], dtype=np.float32)
    names = [[n.decode() if isinstance(n, bytes) else str(n) for n in row]
             for row in outputs["class_names"]]
    if probabilities.shape[0] != count:
      raise RequestRejected(f"{self._what()} returned {probabilities.shape[0]} predictions for "
                            f"{count} images")
    return PredictResult(self.model, served, signature, probabilities,
                         np.asarray(outputs["classes"], dtype=np.int64), names)


# ------------------------------------------------------------ local images


def _open_image(path: str):
  """Decodes `path` with Pillow; InputError for a missing, unreadable or non-image file."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if os.path.isdir(path):
    raise InputError(f"{path} is a directory, not an image file")
  try:
    image = Image.open(path)
    image.load()
  except UnidentifiedImageError as e:
    raise InputError(f"{path} is not an image (Pillow cannot decode it): give image files "
                     "such as PNG or JPEG") from e
  except OSError as e:
    raise InputError(f"{path} cannot be read ({e.strerror or _first_line(str(e))}): check the file") from e
  except (SyntaxError, ValueError) as e:  # Pillow's errors for corrupt headers
    raise InputError(f"{path} is a corrupt image ({_first_line(str(e))})") from e
  return image


# Pillow modes of 8-bit images, by channel count.
_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _describe(image) -> str:
  channels = _MODES.get(image.mode)
  return (f"{image.width}x{image.height} pixels with "
          + (f"{channels} channel{'s' if channels > 1 else ''} ({image.mode})" if channels
             else f"mode {image.mode}"))


def _expected(shape: tuple[int, int, int], model: str) -> str:
  h, w, c = shape
  return f"model {model!r} takes {w}x{h} pixels with {c} channel{'s' if c > 1 else ''} (uint8 [batch, {h}, {w}, {c}])"


def _fit(image, path: str, shape: tuple[int, int, int], model: str, resize: bool,
         check_channels: bool = True):
  """Returns `image` as the model's size and mode, converting only if `resize`."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  h, w, c = shape
  if image.mode == "1":  # 1-bit: the same pixels as 8-bit grey, not a conversion
    image = image.convert("L")
  elif image.mode == "P":  # a palette is an encoding of RGB(A), not a channel count
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  target_mode = {1: "L", 3: "RGB"}.get(c)
  wrong_mode = check_channels and image.mode != target_mode
  wrong_size = image.size != (w, h)
  if not (wrong_mode or wrong_size):
    return image
  if not resize:
    raise InputError(f"{path} is {_describe(image)}, but {_expected(shape, model)}: pass "
                     "--resize to convert it")
  if wrong_mode:
    if target_mode is None:
      raise InputError(f"{path}: cannot convert to {c} channels; {_expected(shape, model)}")
    image = image.convert(target_mode)
  if wrong_size:
    # Antialiased: shrinking a photo to 32x32 without low-pass filtering aliases.
    image = image.resize((w, h), Image.Resampling.LANCZOS)
  return image


def load_pixels(path: str, shape: tuple[int, int, int], model: str, resize: bool) -> np.ndarray:
  """A file as uint8 [H, W, C] for serving_default; InputError if it does not fit."""
  image = _fit(_open_image(path), path, shape, model, resize)
  pixels = np.asarray(image, dtype=np.uint8)
  return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def load_encoded(path: str, shape: tuple[int, int, int], model: str, resize: bool) -> bytes:
  """A file's bytes for serving_encoded, checked for size (and re-encoded if `resize`)."""
  image = _open_image(path)
  if image.format not in _SERVER_DECODABLE and not resize:
    raise InputError(f"{path} is {image.format or 'an unknown format'}, which the model's "
                     f"{ENCODED_SIGNATURE} signature cannot decode: give PNG, JPEG, GIF, BMP "
                     "or WebP, pass --resize to re-encode it, or drop --encoded")
  # The server converts channels itself (decode_image(channels=C)); only the
  # size must already match.
  fitted = _fit(image, path, shape, model, resize, check_channels=False)
  if fitted is image and image.format in _SERVER_DECODABLE:
    with open(path, "rb") as f:
      return f.read()
  if fitted.mode not in _MODES:  # CMYK, 16-bit, ...: PNG takes 8-bit L/LA/RGB/RGBA
    fitted = fitted.convert("RGB")
  buffer = io.BytesIO()
  fitted.save(buffer, format="PNG")  # lossless, so resizing is the only change
  return buffer.getvalue()


# ---------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
  """argparse with errors as one `error: ` line and exit code 2."""

  def error(self, message):
    raise InputError(f"{message} (see --help)")


def _positive(kind: type) -> Callable[[str], Any]:
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
      raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value
  return parse


def _non_negative_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"{text} must be >= 0")
  return value


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="python -m serving.client",
      description="Classify image files with a model served by TF Serving (REST or gRPC) and "
                  "print the top classes with their probabilities.",
      epilog=f"Exit codes: 0 ok, {EXIT_INPUT} bad local input (file, size, flags), "
             f"{EXIT_REJECTED} the server rejected the request (NOT_FOUND, INVALID_ARGUMENT, ...), "
             f"{EXIT_UNAVAILABLE} the server could not be reached or timed out.")
  server = parser.add_mutually_exclusive_group(required=True)
  server.add_argument("--rest", metavar="URL", help="TF Serving's REST API, e.g. http://HOST:8501.")
  server.add_argument("--grpc", metavar="HOST:PORT", help="TF Serving's gRPC API, e.g. HOST:8500.")
  parser.add_argument("--model", required=True, help="Model name in TF Serving, e.g. cifar10.")
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--version", type=_non_negative_int, help="Model version (default: the latest).")
  which.add_argument("--label", help="Version label from models.config, e.g. stable or canary.")
  parser.add_argument("--top-k", type=_positive(int), default=3,
                      help="Classes to print per image (default: 3).")
  parser.add_argument("--encoded", action="store_true",
                      help=f"Send the file bytes to the {ENCODED_SIGNATURE} signature instead of "
                           f"decoded pixels to {DEFAULT_SIGNATURE}.")
  parser.add_argument("--resize", action="store_true",
                      help="Resize and convert channels to what the model takes (default: refuse "
                           "images that do not fit).")
  parser.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT_S,
                      help=f"Seconds to wait for each answer (default: {DEFAULT_TIMEOUT_S:g}).")
  parser.add_argument("--batch-size", type=_positive(int), default=DEFAULT_BATCH_SIZE,
                      help=f"Images per request (default: {DEFAULT_BATCH_SIZE}).")
  parser.add_argument("--retry-backoff-s", type=_positive(float), default=DEFAULT_BACKOFF_S,
                      metavar="SECONDS",
                      help=f"Seconds before retrying a server that is UNAVAILABLE, doubling for the "
                           f"next retry; {DEFAULT_ATTEMPTS} attempts in all (default: "
                           f"{DEFAULT_BACKOFF_S:g}). Raise it for a server that takes longer to "
                           "restart.")
  parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
  parser.add_argument("files", nargs="+", metavar="FILE", help="Image files (PNG, JPEG, GIF, BMP, WebP, ...).")
  return parser


def run(args: argparse.Namespace, out=sys.stdout) -> None:
  """Classifies `args.files` and prints the results."""
  kwargs = dict(version=args.version, label=args.label, timeout_s=args.timeout,
                backoff_s=args.retry_backoff_s)
  client = (PredictClient.rest(args.rest, args.model, **kwargs) if args.rest
            else PredictClient.grpc(args.grpc, args.model, **kwargs))
  with client:
    metadata = client.metadata()
    shape = metadata.image_shape()
    load = load_encoded if args.encoded else load_pixels
    # Every file is checked before anything is sent, so a bad file costs no request.
    inputs = [load(path, shape, args.model, args.resize) for path in args.files]
    results = []
    for start in range(0, len(inputs), args.batch_size):
      chunk = inputs[start:start + args.batch_size]
      result = client.predict_encoded(chunk) if args.encoded else client.predict(np.stack(chunk))
      results.append(result)
  top = [row for r in results for row in r.top_k(args.top_k)]
  # gRPC responses name the version that answered; REST ones do not, so REST
  # reports the version whose metadata was read just before.
  version = next((r.version for r in results if r.version is not None), metadata.version)
  if args.json:
    json.dump({"model": args.model, "version": version,
               "signature": ENCODED_SIGNATURE if args.encoded else DEFAULT_SIGNATURE,
               "predictions": [{"file": path, "top_k": [{"class": name, "probability": p}
                                                        for name, p in row]}
                               for path, row in zip(args.files, top)]}, out, indent=2)
    out.write("\n")
    return
  for path, row in zip(args.files, top):
    out.write(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in row) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command line; returns the exit code."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("warning: %(message)s"))
  log.addHandler(handler)
  log.setLevel(logging.WARNING)
  log.propagate = False
  try:
    args = build_parser().parse_args(argv)
    run(args)
  except ClientError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code
  return EXIT_OK


if __name__ == "__main__":
  sys.exit(main())
