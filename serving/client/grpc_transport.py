"""TF Serving's gRPC tensorflow.serving.PredictionService.

grpcio and the tensorflow-serving-api protos (which import TensorFlow) are
imported when a GrpcTransport is created, never at module import: REST users
install neither.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Optional

import numpy as np

from serving.client import protos
from serving.client.errors import MalformedResponse, StatusError, first_line
from serving.client.metadata import OUTPUTS, parse_version
from serving.client.results import MAX_CLASSES, Outputs, check_outputs
from serving.client.tensors import to_numpy, to_tensor_proto

# gRPC's default 4 MB receive limit is too small for large batches of big images.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@contextlib.contextmanager
def quiet_stderr():
  """Sends file descriptor 2 to /dev/null for the duration.

  The serving protos import TensorFlow (in a library user's process; the
  command line loads only its protos: serving/client/protos.py), whose C++
  start-up lines (CPU features, no CUDA) are written before its logging is
  initialised and ignore TF_CPP_MIN_LOG_LEVEL; on a client's stderr they are noise. Python
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


def _import_protos():
  with quiet_stderr():
    import grpc  # pylint: disable=import-outside-toplevel
    from google.protobuf import message  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  return grpc, message, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc


def _import_status_protos():
  with quiet_stderr():
    from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  return get_model_status_pb2, model_service_pb2_grpc


def _with_runtime_fallback(load):
  """load() of proto modules, falling back to TensorFlow's runtime if a module needs it.

  Under the command line's empty `tensorflow` package (serving/client/protos.py)
  a proto module that needs TensorFlow's runtime fails to import; then the
  package is forgotten and the protos are imported again, with TensorFlow.
  """
  try:
    return load()
  except ImportError:
    if not protos.active():
      raise
    protos.restore()
    return load()


def import_protos():
  """grpc, protobuf's `message`, and PredictionService's protos and stub (`_with_runtime_fallback`)."""
  return _with_runtime_fallback(_import_protos)


class GrpcTransport:
  """TF Serving's gRPC tensorflow.serving.PredictionService."""

  def __init__(self, target: str, timeout_s: float):
    grpc, message, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc = import_protos()
    self._grpc = grpc
    self._decode_error = message.DecodeError
    self._metadata_pb2 = get_model_metadata_pb2
    self._predict_pb2 = predict_pb2
    self._stub_class = prediction_service_pb2_grpc.PredictionServiceStub
    self._status_pb2 = None  # ModelService's protos, imported on the first status()
    self.target = target
    self.timeout_s = timeout_s
    self._connect()

  def _connect(self) -> None:
    self.channel = self._grpc.insecure_channel(self.target, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Channels share connections (subchannels) process-wide by default, so
        # the channel reset() opens can get the closed one's refused
        # connection, still in gRPC's own ~1 s reconnect backoff, and fail the
        # retry at once. A channel of its own connects afresh.
        ("grpc.use_local_subchannel_pool", 1)])
    self.stub = self._stub_class(self.channel)
    self.model_stub = None  # ModelService, created on the first status()

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
      raise StatusError(code, first_line(details)) from e

  def metadata(self, model: str, version: Optional[int], label: Optional[str]) -> dict:
    from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
    request = self._metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request, model, version, label)
    response = self._call(self.stub.GetModelMetadata, request)
    signature_defs = self._metadata_pb2.SignatureDefMap()
    try:
      unpacked = ("signature_def" in response.metadata
                  and response.metadata["signature_def"].Unpack(signature_defs))
    except self._decode_error as e:  # the right type name over bytes that do not parse as it
      raise MalformedResponse(f"the metadata's SignatureDefMap does not parse ({e})") from e
    if not unpacked:
      raise MalformedResponse("the metadata response has no SignatureDefMap")
    # The same JSON shape TF Serving's REST API returns, so one parser serves both.
    return {"model_spec": {"name": response.model_spec.name,
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_defs, preserving_proto_field_name=True)}}

  def status(self, model: str) -> dict:
    """GetModelStatus (ModelService), as the JSON TF Serving's REST API returns.

    Only GetModelStatus: ModelService's other method, HandleReloadConfigRequest,
    changes what is served, and no client here calls it (docs/serving.md).
    """
    from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
    if self.model_stub is None:
      # ModelService's protos need more of TensorFlow's (error_codes_pb2) than
      # PredictionService's: the same fallback.
      get_model_status_pb2, model_service_pb2_grpc = _with_runtime_fallback(_import_status_protos)
      self._status_pb2 = get_model_status_pb2
      self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
    request = self._status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    response = self._call(self.model_stub.GetModelStatus, request)
    return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)

  def predict(self, model: str, version: Optional[int], label: Optional[str], signature: str,
              input_name: str, values: Any) -> tuple[Optional[int], Outputs]:
    request = self._predict_pb2.PredictRequest()
    self._spec(request, model, version, label)
    request.model_spec.signature_name = signature
    if isinstance(values, np.ndarray):
      request.inputs[input_name].CopyFrom(to_tensor_proto(values))
    else:
      request.inputs[input_name].CopyFrom(to_tensor_proto(np.array(list(values), dtype=object)))
    response = self._call(self.stub.Predict, request)
    # No output of trainer.export's signatures holds more than batch x classes
    # elements: a tensor declaring more is refused before it is allocated.
    bound = len(values) * MAX_CLASSES
    outputs = {name: to_numpy(response.outputs[name], bound) for name in OUTPUTS
               if name in response.outputs}
    served = (parse_version(response.model_spec.version.value, "served version")
              if response.model_spec.HasField("version") else None)
    return served, check_outputs(outputs, len(values))

  def reset(self) -> None:
    # A channel that failed to connect backs off before it tries again; a
    # retry should connect now.
    self.channel.close()
    self._connect()

  def close(self) -> None:
    self.channel.close()
