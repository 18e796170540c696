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
  type_name = types_pb2.DataType.Name(dtype_enum)
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
                           f"JSON Value: {json.dumps(leaf)} Type: {type(leaf).__name__} is not of "
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


def _parse_predict(servable_lookup, body: bytes):
  """(servable, signature name, inputs, row format?) in TF Serving's order of checks."""
  try:
    request = json.loads(body or b"")
  except ValueError as e:
    raise ServingError(Code.INVALID_ARGUMENT, f"JSON Parse error: {e}") from e
  if not isinstance(request, dict):
    raise ServingError(Code.INVALID_ARGUMENT, "JSON Value not an object")
  signature_name = request.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise ServingError(Code.INVALID_ARGUMENT, "'signature_name' key must be a string value.")
  servable = servable_lookup()
  _, signature = servable.signature(signature_name, rest=True)
  if ("instances" in request) == ("inputs" in request):
    raise ServingError(Code.INVALID_ARGUMENT,
                       "Missing 'inputs' or 'instances' key" if "instances" not in request else
                       "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exist")
  names = list(signature.inputs)
  if "instances" in request:
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
      raise ServingError(Code.INVALID_ARGUMENT, "'instances' must be a non-empty JSON array")
    named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
    if named:
      if any(set(i) != set(names) for i in instances):
        raise ServingError(Code.INVALID_ARGUMENT,
                           f"Failed to process element: 0 key: of 'instances' list. Error: Each "
                           f"instance must name exactly the inputs {names}")
      columns = {n: [i[n] for i in instances] for n in names}
    elif len(names) == 1:
      columns = {names[0]: instances}
    else:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Expecting object with named inputs {names} in each instance")
    arrays = {n: to_array(v, signature.inputs[n].dtype, n) for n, v in columns.items()}
    for n, array in arrays.items():
      if array.dtype == object and array.ndim == 0:
        raise ServingError(Code.INVALID_ARGUMENT, f"Expecting one value per instance for {n}")
    return servable, signature_name, arrays, True
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
  verb = rules.parse_rest_path(method, path)
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
