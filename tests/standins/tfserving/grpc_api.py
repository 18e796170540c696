"""TF Serving's gRPC services over a ServerCore: PredictionService and ModelService.

Sources: model_servers/prediction_service_impl.cc (Predict, GetModelMetadata,
whose metadata["signature_def"] packs a SignatureDefMap) and
model_servers/model_service_impl.cc (GetModelStatus, and
HandleReloadConfigRequest, which has NO authentication: anyone who reaches
the gRPC port can replace the model config; k8s/serving.yaml therefore
serves gRPC on a pod-local Unix socket behind a proxy that refuses it).
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from standins.tfserving import rest
from standins.tfserving.core import ServerCore
from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError
from standins.tfserving.servables import ndarray


def _abort(context, error: ServingError):
  context.abort(getattr(grpc.StatusCode, error.code.name), error.message)


def as_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
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


def _spec(spec) -> tuple[str, object, object]:
  which = spec.WhichOneof("version_choice")
  return (spec.name, spec.version.value if which == "version" else None,
          spec.version_label if which == "version_label" else None)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, core: ServerCore):
    self.core = core

  def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
    """prediction_service_impl.cc, Predict: counted by status, timed when it succeeds."""
    start = time.monotonic()
    try:
      response = self._predict(request)
    except ServingError as e:
      self.core.metrics.request(request.model_spec.name, "Predict", "GRPC", e.code,
                                (time.monotonic() - start) * 1e6)
      _abort(context, e)
    self.core.metrics.request(request.model_spec.name, "Predict", "GRPC", Code.OK,
                              (time.monotonic() - start) * 1e6)
    return response

  def _predict(self, request):
    servable = self.core.servable(*_spec(request.model_spec))
    inputs = {k: ndarray(v) for k, v in request.inputs.items()}
    key, outputs = servable.predict(request.model_spec.signature_name, inputs)
    if request.output_filter:
      unknown = set(request.output_filter) - set(outputs)
      if unknown:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"output tensor alias not found in signature: {sorted(unknown)[0]}")
      outputs = {k: v for k, v in outputs.items() if k in request.output_filter}
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = key
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(as_proto_field(value))
    return response

  def GetModelMetadata(self, request, context):  # noqa: N802
    try:
      if not request.metadata_field:
        raise ServingError(Code.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
      for field in request.metadata_field:
        if field != "signature_def":
          raise ServingError(Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
      servable = self.core.servable(*_spec(request.model_spec))
      response = get_model_metadata_pb2.GetModelMetadataResponse()
      response.model_spec.name = servable.name
      response.model_spec.version.value = servable.version
      signature_defs = get_model_metadata_pb2.SignatureDefMap()
      for key, signature in servable.signature_defs.items():
        signature_defs.signature_def[key].CopyFrom(signature)
      response.metadata["signature_def"].Pack(signature_defs)
      return response
    except ServingError as e:
      _abort(context, e)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, core: ServerCore):
    self.core = core

  def GetModelStatus(self, request, context):  # noqa: N802
    try:
      name, version, _ = _spec(request.model_spec)  # a label is ignored (get_model_status_impl.cc)
      return rest.status_response(self.core, name, version)
    except ServingError as e:
      _abort(context, e)

  def HandleReloadConfigRequest(self, request, context):  # noqa: N802
    """Replaces the model config: unauthenticated, as in model_service_impl.cc."""
    response = model_management_pb2.ReloadConfigResponse()
    try:
      self.core.reload_config(request.config)
    except ServingError as e:
      response.status.error_code = e.code.value
      response.status.error_message = e.message
      _abort(context, e)
    return response


def add_services(server: grpc.Server, core: ServerCore) -> None:
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
