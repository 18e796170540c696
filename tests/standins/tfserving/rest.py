"""TF Serving's REST API over a ServerCore.

Sources: model_servers/http_rest_api_handler.cc (dispatch and the order of
validation), model_servers/http_rest_api_util.cc (paths, status and metadata
JSON), util/json_tensor.cc (request and response tensors) and
model_servers/http_server.cc (status codes). The order of validation, from
http_server.cc's ProcessRequest and json_tensor.cc: path, JSON parse, top level an object, signature_name a
string, then the model lookup, then `instances`/`inputs`, then Predict. So
malformed JSON sent to an unknown model is a 400, not a 404.
"""

from __future__ import annotations

import base64
import http.server
import json
import time
from typing import Any, Optional

import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2

from standins.tfserving import rules
from standins.tfserving.core import ServerCore
from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError
from standins.tfserving.servables import NUMPY_DTYPES
from standins.tfserving.servables import Servable

STATE_ENUM = {s: getattr(get_model_status_pb2.ModelVersionStatus, s.value) for s in rules.State}


# ------------------------------------------------------------------- input


def _leaves(value: Any):
  if isinstance(value, list):
    for item in value:
      yield from _leaves(item)
  else:
    yield value


def _decode_b64(value: Any) -> Any:
  """Replaces {"b64": "..."} objects with the bytes they encode, recursively."""
  if isinstance(value, dict):
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
      raise ServingError(Code.INVALID_ARGUMENT,
                         "JSON object: does not have named input with exactly one key \"b64\"")
    try:
      return base64.b64decode(value["b64"], validate=True)
    except ValueError as e:
      raise ServingError(Code.INVALID_ARGUMENT, f"Unable to base64 decode: {e}") from e
  if isinstance(value, list):
    return [_decode_b64(v) for v in value]
  return value


def to_array(value: Any, dtype_enum: int, name: str) -> np.ndarray:
  """A JSON value as a tensor of the signature input's dtype (util/json_tensor.cc).

  Floats take any number, NaN and Infinity included; integers refuse a
  number with a fraction or exponent (1.0); strings take text or
  {"b64": ...}; a ragged list is refused.
  """
  dtype = NUMPY_DTYPES.get(dtype_enum)
  # tensorflow's DataTypeString: "float", "int32", "uint8", "string", ...
  type_name = types_pb2.DataType.Name(dtype_enum)[3:].lower()
  if dtype is object:
    value = _decode_b64(value)
    leaves = list(_leaves(value))
    if not all(isinstance(v, (str, bytes)) for v in leaves):
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"JSON Value not formatted correctly for {name}: expected a string")
  else:
    for leaf in _leaves(value):
      if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"JSON Value: {json.dumps(leaf)} not formatted correctly for base64 data"
                           if isinstance(leaf, dict) else
                           f"JSON Value: {json.dumps(leaf)} Type: {_json_type(leaf)} is not of "
                           f"expected type: {type_name}")
      if dtype is not None and np.dtype(dtype).kind in "iu" and isinstance(leaf, float):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"JSON Value: {leaf!r} Type: Number is not of expected type: {type_name}")
  try:
    array = np.array(value, dtype=dtype if dtype is not None else None)
  except (ValueError, OverflowError) as e:  # ragged, or out of the dtype's range
    raise ServingError(Code.INVALID_ARGUMENT, f"Failed to process element: {name}: {e}") from e
  if dtype is object:
    array = np.vectorize(lambda v: v if isinstance(v, bytes) else v.encode(), otypes=[object])(array) \
        if array.size else array.astype(object)
  return array


def _json_type(value: Any) -> str:
  """util/json_tensor.cc, JsonTypeString: rapidjson's type names."""
  if value is None:
    return "Null"
  if isinstance(value, bool):
    return "True" if value else "False"
  return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_object(value: Any) -> bool:
  """json_tensor.cc's IsElementObject: an object that is not {"b64": ...}."""
  return isinstance(value, dict) and not (set(value) == {"b64"})


def _dense_shape(value: Any) -> list[int]:
  """json_tensor.cc, GetDenseTensorShape: each list's length, following first elements."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    value = value[0] if value else None
  return shape


def _leaf_count(value: Any) -> int:
  return sum(1 for _ in _leaves(value))


def _shape_text(shape: list[int]) -> str:
  return "[" + ",".join(str(d) for d in shape) + "]"  # json_tensor.cc, ShapeToString


def _instances(instances: Any, signature) -> dict[str, np.ndarray]:
  """The "instances" (row) format as one tensor per input.

  Source: util/json_tensor.cc, FillPredictRequestFromJson and
  FillTensorMapFromInstancesList / AddInstanceItem: all objects (named
  inputs) or all values/lists, each instance of one size and shape, which
  are then stacked along a new first dimension.
  """
  if not isinstance(instances, list):
    raise ServingError(Code.INVALID_ARGUMENT, "Expecting 'instances' to be an list/array")
  if not instances:
    raise ServingError(Code.INVALID_ARGUMENT, "No values in 'instances' array")
  names = sorted(signature.inputs)
  if not _is_object(instances[0]) and len(names) > 1:
    raise ServingError(Code.INVALID_ARGUMENT,
                       "instances is a plain list, but expecting list of objects as multiple input "
                       "tensors required as per tensorinfo_map")
  objects = _is_object(instances[0])
  sizes: dict[str, int] = {}
  shapes: dict[str, list[int]] = {}
  items: dict[str, list[np.ndarray]] = {}

  def add(item: Any, name: str) -> None:  # AddInstanceItem
    if name not in signature.inputs:
      raise ServingError(Code.INVALID_ARGUMENT, f"JSON object: does not have named input: {name}")
    shape, size = _dense_shape(item), _leaf_count(item)
    array = to_array(item, signature.inputs[name].dtype, name)
    if name not in sizes:
      sizes[name], shapes[name] = size, shape
    elif sizes[name] != size:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Expecting tensor size: {sizes[name]} but got: {size}")
    elif shapes[name] != shape:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}")
    items.setdefault(name, []).append(array)

  for i, element in enumerate(instances):
    if objects:
      if not _is_object(element):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Expecting object but got list at item {i} of input list")
      for name, value in element.items():
        try:
          add(value, name)
        except ServingError as e:
          raise ServingError(Code.INVALID_ARGUMENT, f"Failed to process element: {i} key: {name} "
                                                    f"of 'instances' list. Error: {e}") from e
      if set(element) != set(names):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to process element: {i} of 'instances' list. JSON object: "
                           f"{json.dumps(element, separators=(',', ':'))} keys must be equal to: "
                           f"{','.join(names)}")
    else:
      if _is_object(element):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Expecting value/list but got object at item {i} of input list")
      try:
        add(element, names[0])
      except ServingError as e:
        raise ServingError(Code.INVALID_ARGUMENT, f"Failed to process element: {i} of 'instances' "
                                                  f"list. Error: {e}") from e
  return {name: np.stack(arrays) for name, arrays in items.items()}


def _parse_predict(servable_lookup, body: bytes):
  """(servable, signature name, inputs, row format?) in TF Serving's order of checks."""
  if not body:
    raise ServingError(Code.INVALID_ARGUMENT, "JSON Parse error: The document is empty")
  try:
    request = json.loads(body)
  except (ValueError, RecursionError) as e:
    # rapidjson's words differ from Python's; the offset is the same idea.
    raise ServingError(Code.INVALID_ARGUMENT, f"JSON Parse error: Invalid value. at offset: "
                                              f"{getattr(e, 'pos', 0)}") from e
  if not isinstance(request, dict):
    raise ServingError(Code.INVALID_ARGUMENT,
                       f"JSON Value: {json.dumps(request)} Is not object")
  signature_name = request.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise ServingError(Code.INVALID_ARGUMENT,
                       f"JSON Value: {json.dumps(request)} not formatted correctly. 'signature_name' "
                       "key must be a string value.")
  servable = servable_lookup()
  _, signature = servable.signature(signature_name, rest=True)
  if ("instances" in request) == ("inputs" in request):
    raise ServingError(Code.INVALID_ARGUMENT,
                       "Missing 'inputs' or 'instances' key" if "instances" not in request else
                       "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exist")
  names = list(signature.inputs)
  if "instances" in request:
    return servable, signature_name, _instances(request["instances"], signature), True
  inputs = request["inputs"]
  if not (isinstance(inputs, dict) and set(inputs) != {"b64"}):
    if len(names) != 1:
      raise ServingError(Code.INVALID_ARGUMENT, f"'inputs' must name the inputs {names}")
    inputs = {names[0]: inputs}
  arrays = {n: to_array(v, signature.inputs[n].dtype, n) if n in signature.inputs
            else np.asarray(_decode_b64(v), dtype=object) for n, v in inputs.items()}
  return servable, signature_name, arrays, False


# ------------------------------------------------------------------ output


def _json(value: Any, dtype: np.dtype, b64: bool) -> str:
  """One output value (nested lists) as TF Serving writes it."""
  if isinstance(value, list):
    return "[" + ",".join(_json(v, dtype, b64) for v in value) + "]"
  if isinstance(value, bytes):
    if b64:
      return json.dumps({"b64": base64.b64encode(value).decode()})
    return json.dumps(value.decode("utf-8", "replace"))
  if dtype.kind == "f":
    return rules.format_decimal(float(value), double=dtype == np.float64)
  if dtype.kind == "b":
    return "true" if value else "false"
  return str(int(value))


def _output_json(outputs: dict[str, np.ndarray], row: bool) -> str:
  # Outputs named *_bytes are binary: written as {"b64": ...} (json_tensor.cc).
  values = {k: (v, [_json(x, v.dtype, k.endswith("_bytes")) for x in v.tolist()] if v.ndim else
                _json(v.item(), v.dtype, k.endswith("_bytes"))) for k, v in outputs.items()}
  if not row:
    if len(values) == 1:
      (_, text), = values.values()
      return '{"outputs":' + ("[" + ",".join(text) + "]" if isinstance(text, list) else text) + "}"
    return '{"outputs":{' + ",".join(
        f"{json.dumps(k)}:" + ("[" + ",".join(t) + "]" if isinstance(t, list) else t)
        for k, (_, t) in values.items()) + "}}"
  if len(values) == 1:
    (_, text), = values.values()
    return '{"predictions":[' + ",".join(text) + "]}"
  count = len(next(iter(values.values()))[1])
  rows = ["{" + ",".join(f"{json.dumps(k)}:{t[i]}" for k, (_, t) in values.items()) + "}"
          for i in range(count)]
  return '{"predictions":[' + ",".join(rows) + "]}"


def _signature_def_map(servable: Servable):
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  for key, signature in servable.signature_defs.items():
    signature_defs.signature_def[key].CopyFrom(signature)
  return signature_defs


def metadata_json(servable: Servable) -> dict:
  """http_rest_api_util.cc, ToJsonString(GetModelMetadataResponse): field names preserved."""
  return {"model_spec": {"name": servable.name, "signature_name": "",
                         "version": str(servable.version)},
          "metadata": {"signature_def": json_format.MessageToDict(
              _signature_def_map(servable), preserving_proto_field_name=True,
              always_print_fields_with_no_presence=True)}}


def status_response(core: ServerCore, name: str, version) -> get_model_status_pb2.GetModelStatusResponse:
  """GetModelStatusImpl::GetModelStatusWithModelSpec; each version's status is rules.version_status."""
  response = get_model_status_pb2.GetModelStatusResponse()
  for v, state, code, message in core.version_statuses(name, version):
    status = response.model_version_status.add(version=v, state=STATE_ENUM[state])
    status.status.error_code = code.value
    status.status.error_message = message
  return response


def status_json(core: ServerCore, name: str, version) -> dict:
  """http_rest_api_util.cc, ToJsonString(GetModelStatusResponse): always_print_primitive_fields."""
  return json_format.MessageToDict(status_response(core, name, version),
                                   always_print_fields_with_no_presence=True)


# ----------------------------------------------------------------- handler


def respond(core: ServerCore, method: str, path: str, body: bytes) -> tuple[int, str]:
  """One request of the REST API (a /v1/ path): (HTTP status, response body)."""
  status, text, _, _ = _api(core, method, path, body)
  return status, text


def _api(core: ServerCore, method: str, path: str, body: bytes) -> tuple[int, str, str, Code]:
  """(HTTP status, body, model name, status code): http_server.cc's ProcessRequest."""
  parsed = None
  try:
    parsed = rules.parse_rest_path(method, path)
    if parsed is None:
      raise ServingError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
    if method == "GET":
      if not parsed.model:
        raise ServingError(Code.INVALID_ARGUMENT, "Missing model name in request.")
      if parsed.verb == "metadata":
        return (200, json.dumps(metadata_json(core.servable(parsed.model, parsed.version,
                                                            parsed.label))), parsed.model, Code.OK)
      return 200, json.dumps(status_json(core, parsed.model, parsed.version)), parsed.model, Code.OK
    if parsed.verb != "predict":
      raise ServingError(Code.UNIMPLEMENTED, f"the stand-in does not implement :{parsed.verb}")
    servable, signature_name, inputs, row = _parse_predict(
        lambda: core.servable(parsed.model, parsed.version, parsed.label), body)
    _, outputs = servable.predict(signature_name, inputs)
    return 200, _output_json(outputs, row), parsed.model, Code.OK
  except ServingError as e:
    return (rules.http_status(e.code), json.dumps({"error": e.message}),
            parsed.model if parsed else "", e.code)


def handle(core: ServerCore, method: str, path: str, body: bytes,
           metrics_path: Optional[str] = None) -> tuple[int, str, str]:
  """One HTTP request on the REST port: (HTTP status, content type, body).

  rules.rest_route picks the handler: the Prometheus page, the REST API
  (whose requests are counted, as http_server.cc's ProcessRequest records
  request_count for every one and request_latency for the successful), or
  libevent's 404 page.
  """
  route = rules.rest_route(path, metrics_path)
  if route == "metrics":
    # http_server.cc, ProcessPrometheusRequest: any method, text/plain.
    return 200, "text/plain", core.metrics.page()
  if route is None:
    return 404, "text/html; charset=ISO-8859-1", rules.NOT_FOUND_PAGE
  start = time.monotonic()
  status, text, model, code = _api(core, method, path, body)
  try:
    verb = rules.parse_rest_path(method, path)
  except ServingError:
    verb = None
  core.metrics.request(model, verb.verb if verb else "", "REST", code,
                       (time.monotonic() - start) * 1e6)
  return status, "application/json", text


def handler_class(core: ServerCore, metrics_path: Optional[str] = None):
  """A BaseHTTPRequestHandler serving `core`'s REST API (and metrics at `metrics_path`)."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving
    disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs

    def log_message(self, *args):
      pass

    def _handle(self):
      length = int(self.headers.get("Content-Length") or 0)
      body = self.rfile.read(length) if length else b""
      status, content_type, text = handle(core, self.command, self.path.split("?", 1)[0], body,
                                          metrics_path)
      data = text.encode()
      reason = {499: "Client Closed Request"}.get(status) or http.HTTPStatus(status).phrase
      # libevent's error page closes the connection (evhttp_send_error).
      close = "Connection: close\r\n" if content_type.startswith("text/html") else ""
      head = (f"HTTP/1.1 {status} {reason}\r\n{close}"
              f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n").encode()
      self.wfile.write(head + data)  # one write: headers and body in one segment
      if close:
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

  return Handler
